#!/usr/bin/env bash
# Validate the deployment files with the tools at hand: YAML syntax of the compose file, the
# Prometheus config and its rules (promtool), the nginx front (`nginx -t` with a throwaway
# self-signed certificate), and the systemd units (`systemd-analyze verify`, pointed at this
# checkout). A tool that is not installed is skipped with a note. No docker engine is needed.
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd .. && pwd)
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=python3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0

echo "== docker-compose.yml, prometheus.yml: YAML"
"$python" - <<'PY'
import yaml
compose = yaml.safe_load(open("docker-compose.yml"))
assert set(compose["services"]) >= {"proxy", "postgres", "redis", "prometheus", "grafana", "nginx"}
for name, service in compose["services"].items():
    assert "image" in service or "build" in service, name
yaml.safe_load(open("prometheus.yml"))
print("ok")
PY

if command -v promtool >/dev/null; then
  echo "== promtool: prometheus.yml with grafana/ollama_alerts.yml"
  cp prometheus.yml "$work/prometheus.yml"
  cp ../grafana/ollama_alerts.yml "$work/ollama_alerts.yml"
  promtool check config "$work/prometheus.yml" || failed=1
else
  echo "-- promtool not installed: skipped (apt-get install prometheus)"
fi

if command -v amtool >/dev/null; then
  echo "== amtool: grafana/alertmanager.yml"
  amtool check-config ../grafana/alertmanager.yml || failed=1
else
  echo "-- amtool not installed: skipped (apt-get install prometheus-alertmanager)"
fi

nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
if [ -x "$nginx_bin" ] && command -v openssl >/dev/null; then
  echo "== nginx -t: nginx/ollama-monitor.conf"
  mkdir -p "$work/nginx/certs" "$work/nginx/logs"
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=monitor.example.com \
    -keyout "$work/nginx/certs/privkey.pem" -out "$work/nginx/certs/fullchain.pem" 2>/dev/null
  sed "s#/etc/nginx/certs/ollama-monitor#$work/nginx/certs#" nginx/ollama-monitor.conf \
    >"$work/nginx/site.conf"
  cat >"$work/nginx/nginx.conf" <<CONF
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log;
events {}
http {
    access_log off;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    include $work/nginx/site.conf;
}
CONF
  "$nginx_bin" -t -q -p "$work/nginx" -e "$work/nginx/logs/error.log" -c "$work/nginx/nginx.conf" \
    && echo ok || failed=1
else
  echo "-- nginx or openssl not installed: skipped (apt-get install nginx openssl)"
fi

if command -v systemd-analyze >/dev/null; then
  echo "== systemd-analyze verify: systemd/*.service, *.timer"
  mkdir -p "$work/systemd"
  for unit in systemd/*.service systemd/*.timer; do
    sed "s#/opt/ollama-monitor#$root#g" "$unit" >"$work/systemd/$(basename "$unit")"
  done
  # A parse warning does not fail verify, so any output at all counts as a failure.
  if output=$(cd "$work/systemd" && systemd-analyze verify --man=no ./*.service ./*.timer 2>&1) \
    && [ -z "$output" ]; then
    echo "ok"
  else
    echo "$output"
    failed=1
  fi
else
  echo "-- systemd-analyze not available: skipped"
fi

exit $failed
