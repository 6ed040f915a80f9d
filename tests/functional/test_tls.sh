#!/usr/bin/env bash
# TLS (docs/tls.md): with --tls=require, PSK and X.509 serve nbdinfo, nbdcopy
# (multi-conn), qemu-img, and fio verify (X.509) over nbds URIs; plain clients
# (nbdinfo --list too) and wrong keys are refused; --tls=on serves both; a
# client certificate is checked with --tls-verify-peer; SIGHUP with a new
# PSK file: new clients need the new key, a connected client keeps working.
. "$(dirname "$0")/lib.sh"
need nbdinfo nbdcopy qemu-img qemu-io certtool psktool truncate cmp timeout
/usr/bin/python3 -c 'import nbd' 2>/dev/null || need python3-libnbd-module

PKI=$WORK/pki    # CA, server and client certificates (the layout of nbdkit, qemu and libnbd)
CAONLY=$WORK/ca  # the CA certificate alone: a client without a certificate of its own
PSKDIR=$WORK/psk # keys.psk: the name qemu's tls-creds-psk looks for
mkdir -p "$PKI" "$CAONLY" "$PSKDIR" "$WORK/psk-other"

# --- Credentials, with the commands docs/tls.md gives ---
(
  cd "$PKI"
  certtool --generate-privkey >ca-key.pem 2>/dev/null
  cat >ca.info <<'EOF'
cn = bowstack test CA
ca
cert_signing_key
expiration_days = 2
EOF
  certtool --generate-self-signed --load-privkey ca-key.pem --template ca.info --outfile ca-cert.pem 2>/dev/null
  certtool --generate-privkey >server-key.pem 2>/dev/null
  cat >server.info <<'EOF'
organization = bowstack test
cn = localhost
dns_name = localhost
ip_address = 127.0.0.1
tls_www_server
encryption_key
signing_key
expiration_days = 2
EOF
  certtool --generate-certificate --load-ca-certificate ca-cert.pem --load-ca-privkey ca-key.pem \
    --load-privkey server-key.pem --template server.info --outfile server-cert.pem 2>/dev/null
  certtool --generate-privkey >client-key.pem 2>/dev/null
  cat >client.info <<'EOF'
organization = bowstack test
cn = client
tls_www_client
encryption_key
signing_key
expiration_days = 2
EOF
  certtool --generate-certificate --load-ca-certificate ca-cert.pem --load-ca-privkey ca-key.pem \
    --load-privkey client-key.pem --template client.info --outfile client-cert.pem 2>/dev/null
) || fail "certtool could not make the test certificates"
cp "$PKI/ca-cert.pem" "$CAONLY/"
psktool -u alice -p "$PSKDIR/keys.psk" >/dev/null || fail "psktool failed"
psktool -u alice -p "$WORK/psk-other/keys.psk" >/dev/null || fail "psktool failed"
chmod 600 "$PKI"/*-key.pem "$PSKDIR/keys.psk"

truncate -s 32M "$WORK/img"
EXPORT=hidden-export-7f3a  # must never reach a plain client
head -c 4M /dev/urandom >"$WORK/data"

# tcp_port: the TCP port of the running server (listening on 127.0.0.1:0).
tcp_port() { status_field .endpoints.0 | sed -E 's/.*:([0-9]+)$/\1/'; }
psk_uri() { echo "nbds+unix://alice@/?socket=$SOCK&tls-psk-file=${1:-$PSKDIR/keys.psk}"; }
x509_uri() { echo "nbds://127.0.0.1:$(tcp_port)/?tls-certificates=${1:-$PKI}"; }
plain_uri() { echo "nbd+unix:///?socket=$SOCK"; }

# refused CMD...: the command must fail within 20 s; its output is kept in
# $WORK/refused.all.
refused() {
  if timeout 20 "$@" >"$WORK/refused.out" 2>&1; then
    fail "expected a refusal from: $* ($(head -c 300 "$WORK/refused.out"))"
  fi
  cat "$WORK/refused.out" >>"$WORK/refused.all"
}

# plain_refused: plain clients learn nothing, not even the export's name or size.
plain_refused() {
  : >"$WORK/refused.all"
  refused nbdinfo "$(plain_uri)"
  refused nbdinfo --list "$(plain_uri)"
  refused nbdinfo --list "nbd://127.0.0.1:$(tcp_port)/"
  refused qemu-img info --image-opts "driver=nbd,host=127.0.0.1,port=$(tcp_port)"
  if grep -q -i -e "$EXPORT" -e 33554432 -e "32 MiB" "$WORK/refused.all"; then
    fail "a plain client learnt about the export: $(cat "$WORK/refused.all")"
  fi
}

# qemu_roundtrip OBJECT: qemu-io writes $WORK/data at 8 MiB over TLS,
# qemu-img reads the export back; both must match the file.
qemu_roundtrip() {
  local opts
  opts="driver=nbd,host=127.0.0.1,port=$(tcp_port),tls-creds=tls0"
  qemu-io --object "$1" --image-opts "$opts" -c "write -P 0x6b 8M 1M" >/dev/null ||
    fail "qemu-io write over TLS failed ($1)"
  qemu-img info --object "$1" --image-opts "$opts" | grep -q "virtual size: 32 MiB" ||
    fail "qemu-img info over TLS failed ($1)"
  rm -f "$WORK/qemu.raw"
  qemu-img convert --object "$1" --image-opts "$opts" -O raw "$WORK/qemu.raw" ||
    fail "qemu-img convert over TLS failed ($1)"
  cmp -s -n 1M -i $((8 << 20)):0 "$WORK/qemu.raw" <(head -c 1M /dev/zero | tr '\0' '\153') ||
    fail "qemu-io's write did not read back through qemu-img ($1)"
}

# --- PSK, TLS required ---
start_server "$WORK/img" --listen 127.0.0.1:0 --export-name "$EXPORT" --tls=require --tls-psk="$PSKDIR/keys.psk"
grep -q "TLS require: PSK" "$WORK/server.log" || fail "no TLS line in the log"
nbdinfo --is tls "$(psk_uri)" || fail "nbdinfo over PSK failed or did not use TLS"
nbdinfo --json "$(psk_uri)" | grep -q '"export-size": 33554432' || fail "nbdinfo --json over PSK"
nbdinfo --can multi-conn "$(psk_uri)" || fail "no multi-conn over TLS"
nbdinfo --map "$(psk_uri)" >/dev/null || fail "block status over TLS"
nbdinfo --list "$(psk_uri)" | grep -q "$EXPORT" || fail "nbdinfo --list over PSK"
nbdcopy --connections=4 "$WORK/data" "$(psk_uri)" || fail "nbdcopy to nbds+unix:// (PSK) failed"
nbdcopy "$(psk_uri)" "$WORK/back" || fail "nbdcopy from nbds+unix:// (PSK) failed"
cmp -s -n 4M "$WORK/data" "$WORK/back" || fail "data copied over PSK does not read back"
qemu_roundtrip "tls-creds-psk,id=tls0,dir=$PSKDIR,endpoint=client,username=alice"
plain_refused
refused nbdinfo "$(psk_uri "$WORK/psk-other/keys.psk")"
refused nbdinfo "nbds+unix://mallory@/?socket=$SOCK&tls-psk-file=$PSKDIR/keys.psk"

# --- SIGHUP: a new PSK file for new clients; the connected client keeps going ---
/usr/bin/python3 - "$(psk_uri)" "$WORK" <<'PY' &
import nbd, os, sys, time
uri, work = sys.argv[1], sys.argv[2]
h = nbd.NBD()
h.set_uri_allow_local_file(True)
h.connect_uri(uri)
open(os.path.join(work, "connected"), "w").close()
deadline = time.time() + 60
while not os.path.exists(os.path.join(work, "go")):
    if time.time() > deadline:
        sys.exit("no go signal")
    time.sleep(0.05)
h.pwrite(b"\x42" * 65536, 20 << 20)
assert h.pread(65536, 20 << 20) == b"\x42" * 65536
h.flush()
h.shutdown()
open(os.path.join(work, "done"), "w").close()
PY
client_pid=$!
for ((i = 0; i < 200; i++)); do [[ -e $WORK/connected ]] && break; sleep 0.05; done
[[ -e $WORK/connected ]] || fail "the long-lived client did not connect"
cp "$PSKDIR/keys.psk" "$WORK/old.psk"
cp "$WORK/psk-other/keys.psk" "$PSKDIR/keys.psk"
kill -HUP "$SERVER_PID"
wait_log() {
  for ((i = 0; i < 100; i++)); do grep -q "$1" "$WORK/server.log" && return 0; sleep 0.05; done
  fail "no '$1' in the server log"
}
wait_log "TLS credentials reloaded"
kill -0 "$SERVER_PID" || fail "SIGHUP stopped the server"
nbdinfo "$(psk_uri)" >/dev/null || fail "the new key is refused after SIGHUP"
refused nbdinfo "$(psk_uri "$WORK/old.psk")"
touch "$WORK/go"
wait "$client_pid" || fail "the client connected before SIGHUP failed after it"
[[ -e $WORK/done ]] || fail "the long-lived client did not finish"
# A broken file keeps the keys in use.
echo "garbage" >"$PSKDIR/keys.psk"
kill -HUP "$SERVER_PID"
wait_log "reloading TLS credentials failed"
nbdinfo "$(psk_uri "$WORK/psk-other/keys.psk")" >/dev/null || fail "a bad PSK file on SIGHUP broke the keys in use"
cp "$WORK/old.psk" "$PSKDIR/keys.psk"
stop_server

# --- X.509, TLS required, client certificates verified ---
start_server "$WORK/img" --listen 127.0.0.1:0 --export-name "$EXPORT" --tls=require --tls-certificates="$PKI" --tls-verify-peer
nbdinfo --is tls "$(x509_uri)" || fail "nbdinfo over X.509 failed"
nbdinfo --list "$(x509_uri)" | grep -q "$EXPORT" || fail "nbdinfo --list over X.509"
nbdcopy "$(x509_uri)" "$WORK/back509" || fail "nbdcopy from nbds:// (X.509) failed"
cmp -s -n 4M "$WORK/data" "$WORK/back509" || fail "data read over X.509 differs"
qemu_roundtrip "tls-creds-x509,id=tls0,dir=$PKI,endpoint=client"
plain_refused
refused nbdinfo "$(x509_uri "$CAONLY")"  # no client certificate
stop_server

# --- X.509 without --tls-verify-peer: a client without a certificate is served ---
start_server "$WORK/img" --listen 127.0.0.1:0 --export-name "$EXPORT" --tls=require --tls-certificates="$PKI"
nbdinfo "$(x509_uri "$CAONLY")" >/dev/null || fail "X.509 without a client certificate refused"
# fio verify over TLS: 2 jobs of random writes, then reads that check them.
# fio's nbd engine refuses file names in URIs (libnbd's allow_local_file),
# so libnbd finds the CA where it looks by default, $HOME/.pki/libnbd
# (libnbd 1.14 sends no client certificate from there: hence a server
# without --tls-verify-peer).
if command -v fio >/dev/null; then
  mkdir -p "$WORK/home/.pki"
  mkdir -p "$WORK/home/.pki/libnbd"
  cp "$PKI/ca-cert.pem" "$WORK/home/.pki/libnbd/"
  HOME=$WORK/home timeout 120 fio --name=tls-verify --ioengine=nbd --uri="nbds://127.0.0.1:$(tcp_port)/" \
    --rw=randwrite --bs=4k --iodepth=16 --size=8M --numjobs=2 --offset_increment=8M --verify=crc32c \
    --do_verify=1 --verify_fatal=1 --verify_state_save=0 --group_reporting >"$WORK/fio.out" 2>&1 ||
    { cat "$WORK/fio.out" >&2; fail "fio verify over TLS failed"; }
  grep -q "err= 0" "$WORK/fio.out" || fail "fio reported errors: $(cat "$WORK/fio.out")"
else
  log "fio not installed: no load test over TLS"
fi
stop_server

# --- TLS on: plain and TLS clients alike ---
start_server "$WORK/img" --listen 127.0.0.1:0 --export-name "$EXPORT" --tls=on --tls-psk="$PSKDIR/keys.psk"
nbdinfo --is tls "$(psk_uri)" || fail "--tls=on: TLS client not served"
nbdinfo "$(plain_uri)" >/dev/null || fail "--tls=on: plain client not served"
nbdinfo --is tls "$(plain_uri)" && fail "--tls=on: plain client claims TLS"
nbdcopy "$(plain_uri)" "$WORK/back-plain" || fail "--tls=on: plain nbdcopy failed"
nbdcopy "$(psk_uri)" "$WORK/back-tls" || fail "--tls=on: TLS nbdcopy failed"
cmp -s "$WORK/back-tls" "$WORK/back-plain" || fail "--tls=on: plain and TLS clients read different data"
stop_server

# --- Bad configurations fail before serving ---
"$BOWSTACK" serve "$WORK/img" --unix "$WORK/x.sock" --control "$WORK/x.ctl" --tls=require \
  >"$WORK/err" 2>&1 && fail "--tls=require without credentials started"
grep -q "needs --tls-certificates" "$WORK/err" || fail "unclear error: $(cat "$WORK/err")"
"$BOWSTACK" serve "$WORK/img" --unix "$WORK/x.sock" --control "$WORK/x.ctl" --tls=on --tls-certificates="$CAONLY" \
  >"$WORK/err" 2>&1 && fail "--tls-certificates without a server key started"
grep -q "server-cert.pem" "$WORK/err" || fail "unclear error: $(cat "$WORK/err")"
pass
