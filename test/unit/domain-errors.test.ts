import { toHttpError } from '../../api/errors';
import { FAILURES, type FailureSpec, type FailureType } from '../../common/failures';
import { domainErrorReply } from '../../gateway/replies';
import { WORKFLOW_REFUSALS } from '../../service/checkpoint-service';
import { CooldownActive, InvalidInput, RunnerNotFound } from '../../service/errors';

describe('domain errors at the edges', () => {
  test.each(
    (Object.keys(FAILURES) as FailureType[]).filter((t) => (FAILURES[t] as FailureSpec).http),
  )(
    'the workflow refusal %s answers its status (common/failures.ts) on REST and the WS',
    (type) => {
      const Refusal = WORKFLOW_REFUSALS[type];
      expect(Refusal).toBeDefined();
      const err = new Refusal!('refused');
      const http = (FAILURES[type] as FailureSpec).http;
      expect(toHttpError(err)?.status).toBe(http);
      expect(domainErrorReply('r1', err).error?.code).toBe(http);
    },
  );

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
