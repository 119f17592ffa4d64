/**
 * sysexits EX_CONFIG: a long-running process (`e2epool api`, `worker`, `agent`)
 * that cannot start with its configuration exits with it. Restarting cannot
 * help until an operator fixes the configuration, so the systemd units say
 * `RestartPreventExitStatus=78` instead of restarting every few seconds forever.
 */
export const CONFIG_EXIT_CODE = 78;
