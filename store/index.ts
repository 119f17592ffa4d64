import type { DataSource } from 'typeorm';
import { AgentCommandStore } from './agent-commands';
import { AgentNotices } from './agent-notices';
import { AgentSessionStore } from './agent-sessions';
import { CheckpointLogStore } from './checkpoint-log';
import { CheckpointStore } from './checkpoints';
import { HoldStore } from './holds';
import { OperationLogStore } from './operation-log';
import { DatabaseProbe } from './probe';
import { QuarantineStore } from './quarantine';
import { RunnerPauseStore } from './runner-pauses';
import { RunnerStateStore } from './runner-state';
import type { Queryable } from './queryable';
import { AdminAuditStore, RunnerStore } from './runners';
import { VerificationStore } from './verification';

export type { Queryable } from './queryable';

/** Every query e2epool makes, one store per table. */
export interface Stores {
  checkpoints: CheckpointStore;
  operations: OperationLogStore;
  pauses: RunnerPauseStore;
  holds: HoldStore;
  logs: CheckpointLogStore;
  sessions: AgentSessionStore;
  commands: AgentCommandStore;
  notices: AgentNotices;
  database: DatabaseProbe;
  runners: RunnerStore;
  audit: AdminAuditStore;
  verification: VerificationStore;
  quarantine: QuarantineStore;
  runnerState: RunnerStateStore;
}

/** The stores on a DataSource, and transactions over them. */
export interface Store extends Stores {
  /** Runs `fn` in one transaction: committed when it resolves, rolled back when it throws. */
  transaction<T>(fn: (tx: Stores) => Promise<T>): Promise<T>;
}

type InTransaction = <T>(fn: (q: Queryable) => Promise<T>) => Promise<T>;

function storesOn(q: Queryable, inTransaction: InTransaction): Stores {
  const logs = new CheckpointLogStore(q, inTransaction);
  return {
    checkpoints: new CheckpointStore(q),
    operations: new OperationLogStore(q, logs),
    pauses: new RunnerPauseStore(q),
    holds: new HoldStore(q),
    logs,
    sessions: new AgentSessionStore(q),
    commands: new AgentCommandStore(q),
    notices: new AgentNotices(q),
    database: new DatabaseProbe(q),
    runners: new RunnerStore(q),
    audit: new AdminAuditStore(q),
    verification: new VerificationStore(q),
    quarantine: new QuarantineStore(q),
    runnerState: new RunnerStateStore(q),
  };
}

/** The stores on `ds`. They hold no state of their own: make as many as convenient. */
export function createStore(ds: DataSource): Store {
  // Inside a transaction, work that needs one runs in it.
  const within = (em: Queryable): Stores => storesOn(em, (fn) => fn(em));
  return {
    ...storesOn(ds, (fn) => ds.transaction((em) => fn(em))),
    transaction: (fn) => ds.transaction((em) => fn(within(em))),
  };
}
