import type { FinalizeStatus } from '../common/states';
import {
  createAction,
  DEFAULT_CREATE_WAIT_SECONDS,
  finalizeAction,
  logsAction,
  parseFinalizeStatus,
  parseWaitSeconds,
  pingAction,
  statusAction,
} from '../agent/cli';

/**
 * The five commands a CI job runs through the agent (`create`, `finalize`,
 * `status`, `logs`, `ping`) and the fast way in to them.
 *
 * They run in every CI job, so their start-up time counts: bin/e2epool.js
 * first offers the arguments to `runFromArgv`, which runs a command without
 * loading commander (nor the rest of cli/main) when the arguments are a plain
 * well-formed call. Anything else (help, a usage error, an unknown or repeated
 * flag, a value that looks like a flag) goes to commander, so that help text,
 * messages and exit codes stay commander's. This module and what it imports
 * use Node builtins only (see agent/cli).
 *
 * The flags here must match the commander definitions in cli/main.ts; the
 * test/agent/cli-fast-path.test.ts compares the two on the same arguments.
 */

/** What each command's action receives: commander's option values, by key. */
export interface AgentCommandOptions {
  create: { jobId: string; socket?: string; wait: number };
  finalize: { checkpoint: string; status: FinalizeStatus; socket?: string };
  status: { checkpoint: string; socket?: string; json?: boolean };
  ping: { socket?: string; json?: boolean };
  logs: { checkpoint: string; follow?: boolean; socket?: string; json?: boolean };
}

export type AgentCommandName = keyof AgentCommandOptions;

/** `logs`: Ctrl-C stops it quietly with 130; a second one kills as usual. */
async function interruptibleLogs(opts: AgentCommandOptions['logs']): Promise<number> {
  const interrupt = new AbortController();
  const onSigint = () => interrupt.abort();
  process.once('SIGINT', onSigint);
  try {
    return await logsAction(
      {
        checkpoint: opts.checkpoint,
        follow: opts.follow === true,
        socket: opts.socket,
        json: opts.json === true,
      },
      undefined,
      { signal: interrupt.signal },
    );
  } finally {
    process.off('SIGINT', onSigint);
  }
}

const ACTIONS: { [K in AgentCommandName]: (opts: AgentCommandOptions[K]) => Promise<number> } = {
  create: (o) => createAction({ jobId: o.jobId, socket: o.socket, wait: o.wait }),
  finalize: (o) => finalizeAction({ checkpoint: o.checkpoint, status: o.status, socket: o.socket }),
  status: (o) => statusAction({ checkpoint: o.checkpoint, socket: o.socket, json: o.json }),
  ping: (o) => pingAction({ socket: o.socket, json: o.json }),
  logs: interruptibleLogs,
};

/** Runs one agent command; resolves with its exit code. */
export function runAgentCommand<K extends AgentCommandName>(
  name: K,
  opts: AgentCommandOptions[K],
): Promise<number> {
  return ACTIONS[name](opts);
}

/** A flag of an agent command: its option key, and its value's parser (none: a boolean flag). */
interface Flag {
  key: string;
  value?: (text: string) => unknown;
  required?: boolean;
}

const text = (v: string) => v;
const SOCKET: Flag = { key: 'socket', value: text };
const CHECKPOINT: Flag = { key: 'checkpoint', value: text, required: true };
const JSON_FLAG: Flag = { key: 'json' };

const FLAGS: { [K in AgentCommandName]: Record<string, Flag> } = {
  create: {
    '--job-id': { key: 'jobId', value: text, required: true },
    '--socket': SOCKET,
    '--wait': { key: 'wait', value: parseWaitSeconds },
  },
  finalize: {
    '--checkpoint': CHECKPOINT,
    '--status': { key: 'status', value: parseFinalizeStatus, required: true },
    '--socket': SOCKET,
  },
  status: { '--checkpoint': CHECKPOINT, '--socket': SOCKET, '--json': JSON_FLAG },
  ping: { '--socket': SOCKET, '--json': JSON_FLAG },
  logs: {
    '--checkpoint': CHECKPOINT,
    '--follow': { key: 'follow' },
    '--socket': SOCKET,
    '--json': JSON_FLAG,
  },
};

/** Values commander gives an option that was not passed. */
const DEFAULTS: { [K in AgentCommandName]?: Partial<AgentCommandOptions[K]> } = {
  create: { wait: DEFAULT_CREATE_WAIT_SECONDS },
};

export interface ParsedAgentCommand<K extends AgentCommandName = AgentCommandName> {
  name: K;
  opts: AgentCommandOptions[K];
}

const isCommand = (name: string | undefined): name is AgentCommandName =>
  name !== undefined && Object.prototype.hasOwnProperty.call(FLAGS, name);

/**
 * The command and option values of `args` (the arguments after `e2epool`)
 * when they are a plain, valid call of an agent command: each known flag at
 * most once, as `--flag value` or `--flag=value`, no value starting with `-`,
 * required flags present, values that parse. Undefined otherwise: commander
 * then parses them and says what is wrong, or prints the help.
 */
export function parseAgentArgs(args: readonly string[]): ParsedAgentCommand | undefined {
  const [name, ...rest] = args;
  if (!isCommand(name)) return undefined;
  const flags = FLAGS[name];
  const opts: Record<string, unknown> = { ...DEFAULTS[name] };
  const seen = new Set<string>();
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i]!;
    const eq = arg.startsWith('--') ? arg.indexOf('=') : -1;
    const flagName = eq > 0 ? arg.slice(0, eq) : arg;
    const flag = Object.prototype.hasOwnProperty.call(flags, flagName)
      ? flags[flagName]
      : undefined;
    if (!flag || seen.has(flagName)) return undefined;
    seen.add(flagName);
    if (!flag.value) {
      if (eq > 0) return undefined;
      opts[flag.key] = true;
      continue;
    }
    const value = eq > 0 ? arg.slice(eq + 1) : rest[++i];
    if (value === undefined || value.startsWith('-')) return undefined;
    try {
      opts[flag.key] = flag.value(value);
    } catch {
      return undefined;
    }
  }
  for (const [flagName, flag] of Object.entries(flags)) {
    if (flag.required && !seen.has(flagName)) return undefined;
  }
  return { name, opts } as ParsedAgentCommand;
}

/**
 * Runs the agent command `args` call (the arguments after `e2epool`) and sets
 * the exit code; undefined, having done nothing, when commander must parse them.
 */
export function runFromArgv(args: readonly string[]): Promise<void> | undefined {
  const parsed = parseAgentArgs(args);
  if (!parsed) return undefined;
  return runAgentCommand(parsed.name, parsed.opts).then((code) => {
    process.exitCode = code;
  });
}
