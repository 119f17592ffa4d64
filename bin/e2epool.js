#!/usr/bin/env node
'use strict';
const path = require('node:path');
const fs = require('node:fs');

const main = path.join(__dirname, '..', 'dist', 'cli', 'main.js');
if (!fs.existsSync(main)) {
  process.stderr.write(
    'e2epool: not built yet; run `npm run build` in ' + path.dirname(__dirname) + '\n',
  );
  process.exit(1);
}
require(main)
  .buildProgram()
  .parseAsync(process.argv)
  .catch((err) => {
    process.stderr.write('e2epool: ' + (err && err.message ? err.message : String(err)) + '\n');
    process.exit(1);
  });
