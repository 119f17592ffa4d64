#!/usr/bin/env node
'use strict';
const path = require('node:path');
const fs = require('node:fs');

const cli = path.join(__dirname, '..', 'dist', 'cli');
if (!fs.existsSync(path.join(cli, 'main.js'))) {
  process.stderr.write(
    'e2epool: not built yet; run `npm run build` in ' + path.dirname(__dirname) + '\n',
  );
  process.exit(1);
}
// The commands a CI job runs (create, finalize, status, logs, ping) start
// without commander when their arguments are plain; anything else (help, a
// usage error, the controller's commands) goes through cli/main. They come
// from one bundled file when the build made it (cli/bundle-fast-path.ts).
const fastPath = fs.existsSync(path.join(cli, 'agent-commands.bundle.js'))
  ? 'agent-commands.bundle.js'
  : 'agent-commands.js';
const run =
  require(path.join(cli, fastPath)).runFromArgv(process.argv.slice(2)) ||
  require(path.join(cli, 'main.js')).buildProgram().parseAsync(process.argv);
run.catch((err) => {
  process.stderr.write('e2epool: ' + (err && err.message ? err.message : String(err)) + '\n');
  process.exit(1);
});
