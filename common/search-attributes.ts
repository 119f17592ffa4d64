/**
 * Custom search attributes the checkpoint workflow sets, so operators can find
 * a checkpoint in the Web UI and with `temporal workflow list --query`.
 * The dev server registers exactly these at start (it allows at most 10
 * Keyword attributes); production clusters register them once (docs/operators.md, "Bring-up check").
 */
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

export const SA_RUNNER_ID = defineSearchAttributeKey('E2eRunnerId', SearchAttributeType.KEYWORD);
export const SA_JOB_ID = defineSearchAttributeKey('E2eJobId', SearchAttributeType.KEYWORD);
export const SA_CHECKPOINT_NAME = defineSearchAttributeKey(
  'E2eCheckpointName',
  SearchAttributeType.KEYWORD,
);
export const SA_STATE = defineSearchAttributeKey('E2eState', SearchAttributeType.KEYWORD);
export const SA_BACKEND = defineSearchAttributeKey('E2eBackend', SearchAttributeType.KEYWORD);

/** Every custom search attribute e2epool sets (all Keyword). */
export const SEARCH_ATTRIBUTE_KEYS = [
  SA_RUNNER_ID,
  SA_JOB_ID,
  SA_CHECKPOINT_NAME,
  SA_STATE,
  SA_BACKEND,
];

/** `Name=Type` pairs as `temporal server start-dev --search-attribute` takes them. */
export function searchAttributeFlags(): string[] {
  return SEARCH_ATTRIBUTE_KEYS.map((k) => `${k.name}=${cliSearchAttributeType(k.type)}`);
}

/** A search attribute type as the `temporal` CLI spells it (`KEYWORD` → `Keyword`). */
export function cliSearchAttributeType(type: string): string {
  const names: Record<string, string> = {
    TEXT: 'Text',
    KEYWORD: 'Keyword',
    INT: 'Int',
    DOUBLE: 'Double',
    BOOL: 'Bool',
    DATETIME: 'Datetime',
    KEYWORD_LIST: 'KeywordList',
  };
  return names[type] ?? type;
}
