/**
 * Custom search attributes the workflows set, so operators can find a
 * checkpoint in the Web UI and with `temporal workflow list --query`.
 * The dev server registers exactly these at start (it allows at most 10
 * Keyword attributes); production clusters register them once (README).
 */
export const SEARCH_ATTRIBUTES = {
  runnerId: { name: 'E2eRunnerId', type: 'Keyword' },
  jobId: { name: 'E2eJobId', type: 'Keyword' },
  checkpointName: { name: 'E2eCheckpointName', type: 'Keyword' },
  state: { name: 'E2eState', type: 'Keyword' },
  backend: { name: 'E2eBackend', type: 'Keyword' },
} as const;

export type SearchAttributeKey = keyof typeof SEARCH_ATTRIBUTES;

/** `Name=Type` pairs as `temporal server start-dev --search-attribute` takes them. */
export function searchAttributeFlags(): string[] {
  return Object.values(SEARCH_ATTRIBUTES).map((a) => `${a.name}=${a.type}`);
}
