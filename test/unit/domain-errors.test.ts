import { toHttpError } from '../../api/errors';
import { FAILURES, type FailureType } from '../../common/failures';
import { domainErrorReply } from '../../gateway/replies';
import { WORKFLOW_REFUSALS } from '../../service/checkpoint-service';
import { CooldownActive, InvalidInput, RunnerNotFound } from '../../service/errors';

describe('domain errors at the edges', () => {
  /** What a caller of the checkpoint workflow is answered, REST status = WS error.code (docs/protocol.md). */
  const ANSWERED: Record<string, number> = {
    BackendTimeout: 504,
    BackendUnavailable: 502,
    CheckpointConflict: 409,
    CooldownActive: 429,
    CheckpointNotActive: 409,
    InvalidRequest: 422,
    RunClosing: 503,
  };

  test.each(Object.entries(ANSWERED))(
    'the workflow refusal %s answers %d on REST and on the WS',
    (type, code) => {
      const Refusal = WORKFLOW_REFUSALS[type as FailureType];
      expect(Refusal).toBeDefined();
      const err = new Refusal!('refused');
      expect(toHttpError(err)?.status).toBe(code);
      expect(domainErrorReply('r1', err).error?.code).toBe(code);
    },
  );

  test('every refusal a caller can receive is in that list', () => {
    expect(Object.keys(WORKFLOW_REFUSALS).sort()).toEqual(Object.keys(ANSWERED).sort());
    expect(Object.keys(ANSWERED).every((t) => t in FAILURES)).toBe(true);
  });

  test('a cooldown carries Retry-After (REST) and error.retry_after (WS)', () => {
    const err = new CooldownActive('Runner in cooldown', 7);
    const http = toHttpError(err)!;
    expect([http.status, http.detail, http.headers]).toEqual([
      429,
      'Runner in cooldown',
      { 'Retry-After': '7' },
    ]);
    expect(domainErrorReply('r1', err)).toEqual({
      id: 'r1',
      status: 'error',
      data: null,
      error: { code: 429, detail: 'Runner in cooldown', retry_after: 7 },
    });
  });

  test('a validation list is the REST detail as it is, and one JSON string on the WS', () => {
    const issues = [{ type: 'missing', loc: ['body', 'job_id'], msg: 'Field required' }];
    expect(toHttpError(new InvalidInput(issues))).toMatchObject({ status: 422, detail: issues });
    expect(domainErrorReply('r', new InvalidInput(issues)).error).toEqual({
      code: 422,
      detail: JSON.stringify(issues),
    });
    expect(toHttpError(new RunnerNotFound())).toMatchObject({
      status: 404,
      detail: 'Runner not found in inventory',
      headers: {},
    });
  });
});
