#!/usr/bin/env bash
# Installs the e2epool agent as a systemd service on a Linux runner host:
#   group e2epool-ci (the socket group) with the CI user in it, system user
#   e2epool-agent, /etc/e2epool/agent.yml (0600, owner e2epool-agent:root, not
#   the socket group: it holds the tokens and CI jobs are in that group), the systemd
#   unit and a tmpfiles.d link for the CLI's default socket path; then enables
#   and starts the service, or restarts it when the unit or config changed.
# Idempotent: run it again with the same arguments and nothing changes.
# The e2epool CLI must already be installed (see --help).
# With --host-only (what the e2epool-agent .deb's postinst runs) it does the
# host part alone: the checks, the groups, the users and the config's owner and
# mode; no controller URL or token, and nothing to the unit or the service.
# A dry run (--dry-run) changes nothing and exits 1 if a real run would stop.
set -euo pipefail

readonly PROG=install-agent.sh
readonly SERVICE=e2epool-agent
# The agent's user and its socket group, named here and in e2epool-agent.service
# (User=, Group=) only; the installer refuses a unit that names others. The
# socket group is not `e2epool`, the controller's group (it reads the secrets
# in /etc/e2epool/controller.env, ops/systemd/): the CI user joins this one,
# and a CI job must never read the controller's secrets on a host running both.
readonly AGENT_USER=e2epool-agent
readonly SOCKET_GROUP=e2epool-ci
# The socket group before 2.0.0 (now the controller's): see step 2.
readonly OLD_SOCKET_GROUP=e2epool
readonly CONFIG_DIR=/etc/e2epool
# Not readonly: --root moves it under another root (--host-only --dry-run).
CONFIG=/etc/e2epool/agent.yml
# Readable by the agent's user only. Not the socket group: the
# CI user is in it, and a job that can read the agent token can stand in for
# the agent and answer its reset commands.
readonly CONFIG_OWNER=$AGENT_USER:root
# --host-only (the .deb): dpkg installs agent.yml owned by root (so the agent,
# which runs commands, cannot widen its own allowed_commands), mode 0640, and
# this group, which only the agent's user is in, reads it.
readonly CONFIG_GROUP=e2epool-agent
readonly UNIT_DEST=/etc/systemd/system/e2epool-agent.service
readonly TMPFILES_DEST=/etc/tmpfiles.d/e2epool-agent.conf
readonly SOCKET=/run/e2epool/agent.sock
readonly SOCKET_LINK=/run/e2epool-agent.sock
# systemd's PATH for services: where the unit's `#!/usr/bin/env node` finds node.
readonly SERVICE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
readonly MIN_NODE=20.19

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly HERE

usage() {
  cat <<EOF
Usage: $PROG --controller-url URL --runner-id ID --token-file FILE [options]
       $PROG --host-only [--ci-user USER] [--prefix DIR] [--dry-run]

Installs the e2epool agent as the systemd service $SERVICE (run as root).

Required:
  --controller-url URL   the controller's agent gateway, e.g. wss://e2epool.example.com/ws/agent
  --runner-id ID         this runner's runner_id in the controller's inventory
  --token-file FILE      file holding this runner's token (one line), or - for stdin.
                         The token is never accepted as an argument: arguments show in ps.
Options:
  --agent-token-file FILE
                         file holding this runner's agent token (one line), or - for stdin
                         (not both files from stdin). With it the agent opens the WebSocket
                         with the agent token, which the controller then requires: CI jobs,
                         which hold the runner token, cannot stand in for the agent.
  --allow-insecure-ws    allow a ws:// --controller-url to another host (tokens in clear text);
                         without it only wss:// or ws:// to this host (loopback) is accepted
  --ci-user USER         CI user added to group $SOCKET_GROUP to use the socket (default gitlab-runner)
  --allow-command CMD    a command the controller may run (repeat it for each of the
                         runner's reset_cmd, cleanup_cmd, readiness_cmd); default: any
  --prefix DIR           where e2epool is installed: DIR/bin/e2epool (default /usr/local)
  --dry-run              print what would be done, change nothing; exits 1 when it
                         found something that stops a real run (each is a warning)
  --host-only            only check the host and the CLI, create group $SOCKET_GROUP, the users and
                         group $CONFIG_GROUP, and make $CONFIG root:$CONFIG_GROUP 0640 when dpkg
                         left it root:root (the e2epool-agent .deb's postinst runs this)
  --root DIR             with --host-only --dry-run: the package's files are under DIR
                         (a package installed into another root); users and groups are this host's
  -h, --help             this text

Install the e2epool CLI first, one of:
  - the e2epool-agent .deb (npm run package in a checkout makes it; this script is
    then /usr/lib/e2epool/$PROG);
  - the executable e2epool-agent-<version>-linux-x64 as DIR/bin/e2epool;
  - the release package (Node 20.19+ on systemd's PATH, e.g. /usr/bin/node; npm pack
    in a checkout makes e2epool-<version>.tgz):
      npm install -g --prefix /usr/local ./e2epool-<version>.tgz
    This script is then /usr/local/lib/node_modules/e2epool/agent/packaging/$PROG.
EOF
}

say() { printf '%s\n' "$*"; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }
die() {
  printf '%s: %s\n' "$PROG" "$*" >&2
  exit 1
}
usage_error() {
  printf '%s: %s\nUsage: %s --controller-url URL --runner-id ID --token-file FILE [--agent-token-file FILE] [--allow-insecure-ws] [--ci-user USER] [--allow-command CMD]... [--prefix DIR] [--dry-run] (see --help)\n' \
    "$PROG" "$*" "$PROG" >&2
  exit 2
}

controller_url=''
runner_id=''
token_file=''
agent_token_file=''
allow_insecure_ws=0
ci_user=gitlab-runner
prefix=/usr/local
dry_run=0
host_only=0
root=''
allowed_commands=()

value_of() { # flag, remaining argument count, next argument
  if (($2 < 2)); then usage_error "$1 needs a value"; fi
}

while (($# > 0)); do
  case $1 in
    --controller-url) value_of "$1" $# && controller_url=$2 && shift 2 ;;
    --controller-url=*) controller_url=${1#*=} && shift ;;
    --runner-id) value_of "$1" $# && runner_id=$2 && shift 2 ;;
    --runner-id=*) runner_id=${1#*=} && shift ;;
    --token-file) value_of "$1" $# && token_file=$2 && shift 2 ;;
    --token-file=*) token_file=${1#*=} && shift ;;
    --agent-token-file) value_of "$1" $# && agent_token_file=$2 && shift 2 ;;
    --agent-token-file=*) agent_token_file=${1#*=} && shift ;;
    --allow-insecure-ws) allow_insecure_ws=1 && shift ;;
    --ci-user) value_of "$1" $# && ci_user=$2 && shift 2 ;;
    --ci-user=*) ci_user=${1#*=} && shift ;;
    --allow-command) value_of "$1" $# && allowed_commands+=("$2") && shift 2 ;;
    --allow-command=*) allowed_commands+=("${1#*=}") && shift ;;
    --prefix) value_of "$1" $# && prefix=$2 && shift 2 ;;
    --prefix=*) prefix=${1#*=} && shift ;;
    --dry-run) dry_run=1 && shift ;;
    --host-only) host_only=1 && shift ;;
    --root) value_of "$1" $# && root=$2 && shift 2 ;;
    --root=*) root=${1#*=} && shift ;;
    -h | --help) usage && exit 0 ;;
    --token | --token=* | --agent-token | --agent-token=*)
      # Never echo the value: it is a secret that is now in the shell history.
      usage_error "the token is not accepted on the command line (it would show in ps); use --token-file FILE, or --token-file - to read it from stdin"
      ;;
    -*) usage_error "unknown option ${1%%=*}" ;;
    *) usage_error "unexpected argument (not shown, in case it is a secret)" ;;
  esac
done

if [[ -n $root ]]; then
  ((host_only && dry_run)) || usage_error "--root needs --host-only and --dry-run"
  [[ $root =~ ^/[A-Za-z0-9_./-]*$ ]] || usage_error "--root must be an absolute path without spaces (got '$root')"
  root=${root%/}
  prefix=$root/usr
  CONFIG=$root$CONFIG
fi
readonly CONFIG

if ((host_only)); then
  if [[ -n $controller_url$runner_id$token_file$agent_token_file ]] || ((allow_insecure_ws || ${#allowed_commands[@]} > 0)); then
    usage_error "--host-only takes no controller, runner, token or command options"
  fi
  controller_url=ws://localhost/ runner_id=host-only # checked below, never used
fi
missing=()
[[ -n $controller_url ]] || missing+=(--controller-url)
[[ -n $runner_id ]] || missing+=(--runner-id)
[[ -n $token_file ]] || ((host_only)) || missing+=(--token-file)
if ((${#missing[@]} > 0)); then usage_error "missing required ${missing[*]}"; fi

[[ $controller_url =~ ^wss?://[^[:space:][:cntrl:]]+$ ]] ||
  usage_error "--controller-url must be a ws:// or wss:// URL (got '$controller_url')"
# The host of a ws:// URL: after the scheme and any user info, up to the port or path.
if [[ $controller_url == ws://* ]] && ((!allow_insecure_ws)); then
  ws_host=${controller_url#ws://}
  ws_host=${ws_host%%/*}
  ws_host=${ws_host##*@}
  if [[ $ws_host == \[* ]]; then ws_host="${ws_host%%]*}]"; else ws_host=${ws_host%%:*}; fi
  ws_host=${ws_host,,}
  if ! [[ $ws_host == localhost || $ws_host == '[::1]' || $ws_host =~ ^127\.[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
    usage_error "--controller-url is ws:// to $ws_host, which is not this host: the tokens would cross the network unencrypted; use wss://, or pass --allow-insecure-ws on a network you trust"
  fi
fi
[[ $token_file != - || $agent_token_file != - ]] ||
  usage_error "--token-file and --agent-token-file cannot both read stdin"
[[ $runner_id =~ ^[A-Za-z0-9_.-]{1,255}$ ]] ||
  usage_error "--runner-id must be 1-255 of letters, digits, _ . - (got '$runner_id')"
[[ $ci_user =~ ^[A-Za-z_][A-Za-z0-9_.-]*[$]?$ ]] || usage_error "--ci-user: not a user name: '$ci_user'"
prefix=${prefix%/}
[[ $prefix =~ ^/[A-Za-z0-9_./-]*$ ]] || usage_error "--prefix must be an absolute path without spaces (got '$prefix')"
for cmd in "${allowed_commands[@]}"; do
  [[ -n ${cmd//[[:space:]]/} && $cmd != *[$'\n\r']* ]] || usage_error "--allow-command must be one non-empty line"
done

# A secret from a file or stdin (printf is a builtin, so it never appears in
# any process's arguments): read once, kept in this shell only, never printed.
# Sets `secret`.
secret=''
read_secret() { # file or -, what it is (for messages)
  local file=$1 what=$2 source=$1 perms
  secret=''
  if [[ $file == - ]]; then
    source=stdin
    if [[ -t 0 ]]; then
      IFS= read -rsp "e2epool $what: " secret || true
      printf '\n' >&2
    else
      secret=$(cat)
    fi
  else
    [[ -f $file && -r $file ]] || die "cannot read the $what file $file"
    secret=$(<"$file")
    perms=$(stat -c %a "$file")
    if ((8#$perms & 8#077)); then
      warn "$file is readable by other users (mode $perms); chmod 600 it or delete it after installing"
    fi
  fi
  secret=${secret%$'\r'}
  [[ -n $secret ]] || die "the $what is empty (from $source)"
  if [[ $secret =~ [[:space:][:cntrl:]] ]]; then
    die "the $what must be one line without spaces (from $source)"
  fi
}

token=''
if ((!host_only)); then
  read_secret "$token_file" token
  token=$secret
fi
agent_token=''
if [[ -n $agent_token_file ]]; then
  read_secret "$agent_token_file" 'agent token'
  agent_token=$secret
  [[ $agent_token != "$token" ]] ||
    die "the agent token is the runner token: CI jobs hold that one; use the runner's agent_token"
fi
secret=''

# ---------------------------------------------------------------------------

changed=0 # anything changed on this host
restart_needed=0
ci_user_added=0
TMP_FILES=()
cleanup() { if ((${#TMP_FILES[@]} > 0)); then rm -f -- "${TMP_FILES[@]}"; fi; }
trap cleanup EXIT

step() { printf '==> %s\n' "$*"; }

# Runs a command, or in a dry run says it would. Never pass the token here.
run() {
  changed=1
  if ((dry_run)); then
    printf '    would run:%s\n' "$(printf ' %q' "$@")"
  else
    printf '   %s\n' "$(printf ' %q' "$@")"
    "$@"
  fi
}

# A problem that stops a real install; a dry run warns, goes on, and exits 1
# at the end (so a script can run --dry-run as a pre-flight check).
blockers=0
blocker() {
  if ((dry_run)); then
    blockers=$((blockers + 1))
    warn "$* (a real run stops here)"
  else
    die "$*"
  fi
}

# A blocker for an install, a warning for --host-only: a package must install
# on a host whose CI runner or systemd comes later (or in a container).
host_blocker() {
  if ((host_only)); then warn "$*"; else blocker "$*"; fi
}

# YAML single-quoted scalar: '' stands for ' and nothing else is special.
yaml_quote() {
  local s=$1
  printf "'%s'" "${s//\'/\'\'}"
}

render_config() { # token value, agent token value ('' for none)
  printf '# Written by %s; run it again to change this file (edits here are replaced).\n' "$PROG"
  printf '# Every key is described in agent/packaging/agent.example.yml.\n'
  printf 'controller_url: %s\n' "$(yaml_quote "$controller_url")"
  if ((allow_insecure_ws)); then printf 'allow_insecure_ws: true\n'; fi
  printf 'runner_id: %s\n' "$(yaml_quote "$runner_id")"
  printf 'token: %s\n' "$(yaml_quote "$1")"
  if [[ -n $2 ]]; then printf 'agent_token: %s\n' "$(yaml_quote "$2")"; fi
  printf 'socket_path: %s\n' "$SOCKET"
  printf 'socket_group: %s\n' "$SOCKET_GROUP"
  if ((${#allowed_commands[@]} > 0)); then
    printf 'allowed_commands:\n'
    for cmd in "${allowed_commands[@]}"; do printf '  - %s\n' "$(yaml_quote "$cmd")"; done
  fi
}

# Whether $1 exists with exactly the content $2 (plus a final newline).
same_content() {
  [[ -f $1 && -r $1 ]] && cmp -s -- "$1" <(printf '%s\n' "$2")
}

# Installs content $2 as file $1 with mode $3 and owner $4, atomically.
write_file() {
  local dest=$1 content=$2 mode=$3 owner=$4 tmp
  changed=1
  if ((dry_run)); then
    say "    would write $dest (mode $mode, owner $owner)"
    return
  fi
  tmp=$(mktemp "$(dirname "$dest")/.$(basename "$dest").XXXXXX")
  TMP_FILES+=("$tmp")
  printf '%s\n' "$content" >"$tmp"
  chown "$owner" "$tmp"
  chmod "$mode" "$tmp"
  mv -f -- "$tmp" "$dest"
  say "    wrote $dest (mode $mode, owner $owner)"
}

# Keeps file $1 at content $2, mode $3, owner $4; sets file_changed to 1 if
# the content changed. (Not a predicate: `set -e` does not apply inside a
# function called as an `if` condition, and a failed write must stop the script.)
file_changed=0
ensure_file() {
  local dest=$1 content=$2 mode=$3 owner=$4 have
  file_changed=0
  if [[ -e $dest && ! -r $dest ]]; then
    say "    $dest: cannot read it (not root); a real run rewrites it if it differs"
    return 0
  fi
  if same_content "$dest" "$content"; then
    have=$(stat -c '%U:%G %a' "$dest")
    if [[ $have == "$owner ${mode#0}" ]]; then
      say "    $dest: up to date"
    else
      say "    $dest: content up to date, owner/mode $have"
      run chown "$owner" "$dest"
      run chmod "$mode" "$dest"
    fi
    return 0
  fi
  write_file "$dest" "$content" "$mode" "$owner"
  file_changed=1
}

if ((dry_run)); then
  say "Dry run: nothing is changed on this host."
elif ((EUID != 0)); then
  die "must be run as root (try: sudo $0 ...)"
fi
if ((dry_run && EUID != 0)); then
  warn "not root: files only root can read are not compared"
fi

if ((!host_only)); then
  for f in e2epool-agent.service e2epool-agent.tmpfiles; do
    [[ -r $HERE/$f ]] || die "missing $HERE/$f (run this script from the e2epool repository's agent/packaging/)"
  done
fi
if [[ $(uname -s) != Linux ]]; then
  die "this installer is for Linux with systemd; on macOS use $HERE/com.e2epool.agent.plist"
fi
if [[ ! -d /run/systemd/system ]] || ! command -v systemctl >/dev/null; then
  host_blocker "systemd is not running on this host"
fi
for tool in getent groupadd useradd usermod; do
  command -v "$tool" >/dev/null || blocker "$tool is missing (shadow-utils / passwd package)"
done

# --- 1. the e2epool CLI ------------------------------------------------------
bin=$prefix/bin/e2epool
step "e2epool CLI: $bin"
if [[ ! -x $bin ]]; then
  blocker "$bin is not installed. Install it first, from the release package:
  npm install -g --prefix $prefix ./e2epool-<version>.tgz
(or pass --prefix DIR if e2epool is in DIR/bin)"
else
  node_bin=$(PATH=$SERVICE_PATH command -v node || true)
  if [[ $(head -c 2 "$bin") != '#!' ]]; then
    : # the single executable (e2epool-agent-<version>-linux-x64): Node is built in
  elif [[ -z $node_bin ]]; then
    blocker "node is not on systemd's PATH ($SERVICE_PATH); install Node $MIN_NODE+ system-wide (not only through nvm)"
  else
    node_version=$("$node_bin" -p 'process.versions.node' 2>/dev/null || echo 0.0.0)
    IFS=. read -r major minor _ <<<"$node_version"
    IFS=. read -r min_major min_minor <<<"$MIN_NODE"
    if ((major < min_major || (major == min_major && minor < min_minor))); then
      blocker "$node_bin is Node $node_version; e2epool needs $MIN_NODE or newer"
    fi
  fi
  if ! env -i PATH="$SERVICE_PATH" "$bin" agent --help >/dev/null 2>&1; then
    blocker "'$bin agent --help' fails with systemd's PATH; reinstall the package (see --help)"
  fi
  say "    ok"
fi

# --- 2. group, user, CI user ------------------------------------------------
step "group $SOCKET_GROUP"
if getent group "$SOCKET_GROUP" >/dev/null; then
  say "    exists"
else
  run groupadd --system "$SOCKET_GROUP"
fi

step "user $AGENT_USER"
if getent passwd "$AGENT_USER" >/dev/null; then
  say "    exists"
else
  nologin=/usr/sbin/nologin
  [[ -x $nologin ]] || nologin=/sbin/nologin
  [[ -x $nologin ]] || nologin=/bin/false
  run useradd --system --gid "$SOCKET_GROUP" --no-create-home --home-dir /nonexistent \
    --shell "$nologin" --comment 'e2epool agent' "$AGENT_USER"
fi

step "CI user $ci_user in group $SOCKET_GROUP"
if ! id "$ci_user" >/dev/null 2>&1; then
  host_blocker "user $ci_user does not exist: install the CI runner first, or pass --ci-user USER"
else
  if [[ " $(id -nG "$ci_user") " == *" $SOCKET_GROUP "* ]]; then
    say "    already a member"
  else
    run usermod -aG "$SOCKET_GROUP" "$ci_user"
    ci_user_added=1
  fi
  # Before 2.0.0 the socket group was $OLD_SOCKET_GROUP, which is now the
  # controller's: its members read /etc/e2epool/controller.env.
  if [[ " $(id -nG "$ci_user") " == *" $OLD_SOCKET_GROUP "* ]]; then
    warn "$ci_user is still in group $OLD_SOCKET_GROUP (the socket group before 2.0.0; now the controller's, which reads its secrets): gpasswd -d $ci_user $OLD_SOCKET_GROUP"
  fi
fi

# Membership of user $1 in group $2 (false while either is missing).
member_of() {
  [[ " $(id -nG "$1" 2>/dev/null) " == *" $2 "* ]]
}

if ((host_only)); then
  step "config $CONFIG: owner root, group $CONFIG_GROUP (only $AGENT_USER in it), mode 0640"
  getent group "$CONFIG_GROUP" >/dev/null || run groupadd --system "$CONFIG_GROUP"
  member_of "$AGENT_USER" "$CONFIG_GROUP" || run usermod -aG "$CONFIG_GROUP" "$AGENT_USER"
  if [[ ! -e $CONFIG ]]; then
    warn "$CONFIG is missing; the agent cannot start without it"
  else
    have=$(stat -c '%U:%G %a' "$CONFIG")
    mode=8#$(stat -c '%a' "$CONFIG")
    if [[ $have == 'root:root '* ]]; then
      # As dpkg installs it: give it to the agent's group.
      run chgrp "$CONFIG_GROUP" "$CONFIG"
      run chmod 0640 "$CONFIG"
    elif ((mode & 8#004)) || { [[ $(stat -c '%G' "$CONFIG") =~ ^($SOCKET_GROUP|$OLD_SOCKET_GROUP)$ ]] && ((mode & 8#040)); }; then
      warn "$CONFIG ($have) is readable by CI jobs (group $SOCKET_GROUP or $OLD_SOCKET_GROUP, or everyone); make it root:$CONFIG_GROUP 0640"
    else
      say "    $have, kept"
    fi
  fi
  say ""
  if ((dry_run && blockers > 0)); then
    say "Dry run done: nothing was changed; $blockers problem(s) above would stop a real run."
    exit 1
  fi
  if ((dry_run)); then say "Dry run done: nothing was changed."; else say "Host ready."; fi
  exit 0
fi

# --- 3. configuration ---------------------------------------------------------
step "config $CONFIG"
if [[ ! -d $CONFIG_DIR ]]; then
  run install -d -m 0755 -o root -g root "$CONFIG_DIR"
fi
config=$(render_config "$token" "$agent_token")
ensure_file "$CONFIG" "$config" 0600 "$CONFIG_OWNER"
if ((file_changed)); then
  restart_needed=1
  if ((dry_run)); then
    say "    --- $CONFIG (tokens hidden) ---"
    render_config '<hidden>' "${agent_token:+<hidden>}" | sed 's/^/    | /'
    say "    ---"
  fi
fi

# --- 4. systemd unit and socket link ------------------------------------------
step "systemd unit $UNIT_DEST"
unit=$(sed "s|^ExecStart=/usr/local/bin/e2epool agent\$|ExecStart=$bin agent|" "$HERE/e2epool-agent.service")
grep -qxF "ExecStart=$bin agent" <<<"$unit" || die "cannot set ExecStart in $HERE/e2epool-agent.service"
for line in "User=$AGENT_USER" "Group=$SOCKET_GROUP"; do
  grep -qxF "$line" <<<"$unit" || die "$HERE/e2epool-agent.service lacks $line (the names this script creates)"
done
say "    ExecStart=$bin agent, User=$AGENT_USER, Group=$SOCKET_GROUP, socket $SOCKET"
ensure_file "$UNIT_DEST" "$unit" 0644 root:root
unit_changed=$file_changed
if ((unit_changed)); then restart_needed=1; fi

step "socket link $SOCKET_LINK -> $SOCKET ($TMPFILES_DEST)"
tmpfiles=$(<"$HERE/e2epool-agent.tmpfiles")
ensure_file "$TMPFILES_DEST" "$tmpfiles" 0644 root:root
if ((file_changed)) || [[ ! -L $SOCKET_LINK ]]; then
  if [[ -e $SOCKET_LINK && ! -L $SOCKET_LINK ]]; then
    warn "$SOCKET_LINK exists and is not a link (an old agent running as root?); stop that agent and remove it, or the CLI needs E2EPOOL_SOCKET_PATH=$SOCKET"
  else
    run systemd-tmpfiles --create "$TMPFILES_DEST"
  fi
fi
if [[ $(readlink -f /var/run) != /run ]]; then
  warn "/var/run is not /run here: CI jobs need E2EPOOL_SOCKET_PATH=$SOCKET (or --socket)"
fi

# --- 5. service -----------------------------------------------------------------
step "service $SERVICE"
if ((unit_changed)); then run systemctl daemon-reload; fi
enabled=$(systemctl is-enabled "$SERVICE" 2>/dev/null || true)
if systemctl is-active --quiet "$SERVICE" 2>/dev/null; then
  if [[ $enabled != enabled ]]; then run systemctl enable "$SERVICE"; fi
  if ((restart_needed)); then
    say "    restarting: waits for commands in flight to finish (up to 660 s)"
    run systemctl restart "$SERVICE"
  else
    say "    enabled and running, unchanged"
  fi
  started=$restart_needed
else
  run systemctl enable --now "$SERVICE"
  started=1
fi

if ((started && !dry_run)); then
  # The agent opens its socket before it connects to the controller.
  for _ in $(seq 1 20); do
    [[ -S $SOCKET ]] && break
    sleep 0.5
  done
  if [[ -S $SOCKET ]]; then
    say "    listening on $SOCKET"
  else
    warn "$SOCKET did not appear within 10 s; see: journalctl -u $SERVICE -n 50"
  fi
fi

# ---------------------------------------------------------------------------
say ""
if ((dry_run && blockers > 0)); then
  say "Dry run done: nothing was changed; $blockers problem(s) above would stop a real run."
elif ((dry_run)); then
  say "Dry run done: nothing was changed."
elif ((changed)); then
  say "Done."
else
  say "Nothing to do: the agent is installed as asked."
fi
if ((ci_user_added)); then
  say "$ci_user was added to group $SOCKET_GROUP: jobs started from now on can use the socket."
  say "If the runner service itself runs as $ci_user, restart it (e.g. systemctl restart gitlab-runner)."
fi
cat <<EOF
Check it as the CI user:
  sudo -u $ci_user $bin status --checkpoint x; echo "exit \$?"
exit 1 with "Checkpoint not found" (or "Not connected to controller" until the agent
reaches it) means the agent is running and the CI user can reach it; exit 2 means it is
not running; "permission denied" means the CI user is not in group $SOCKET_GROUP yet. Logs:
  journalctl -u $SERVICE -f
EOF
if ((dry_run && blockers > 0)); then exit 1; fi
