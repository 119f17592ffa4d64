import { Gauge, type Registry } from 'prom-client';
import { buildInfo } from './build-info';

/** Registers `e2epool_build_info{version,commit} 1` on `registry` (the API's and the worker's). */
export function registerBuildInfoMetric(registry: Registry): void {
  const { version, commit } = buildInfo();
  new Gauge({
    name: 'e2epool_build_info',
    help: 'Always 1; its labels name the running build (package version, git commit or "unknown").',
    labelNames: ['version', 'commit'] as const,
    registers: [registry],
  }).set({ version, commit }, 1);
}
