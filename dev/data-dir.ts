import { join, resolve } from 'node:path';

/** Where `npm run dev` keeps its state: E2EPOOL_DATA_DIR, else .data/ in the clone. */
export function devDataDir(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env.E2EPOOL_DATA_DIR || join(__dirname, '..', '..', '.data'));
}
