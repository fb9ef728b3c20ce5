#!/usr/bin/env bash
# Model-checks the agent's task and registration protocol (crates/ttp-model): every
# interleaving of a small model -- two records, one task of each type, an fTTP that lists until
# done or once and may lose any answer after acting, crashes between any two steps of the agent
# that keep any prefix of its unflushed commits, a clock that passes deadlines -- driven by the
# agent's own transition functions. ARCHITECTURE.md ("Durability argument") names the property
# that backs each claim.
#
# Then the approval model (MODEL_RELEASE=approval, issue 15 item 2): the same model with
# `[dispatch] idat_release = "approval"` -- no repeat_request; two local users who approve
# (A, B, A again) or deny the send_idat at any step of the agent or while it is down, through
# TaskRecord::approved_by / denied_by, and the dispatcher's needs_approval / hold_for_approval --
# with approvals_required = 2 (both relisting modes) and 1 (listing until done). Its own runs,
# so the automatic model's state counts and times stay as they were.
#
# Then the handover model (MODEL_HANDOVER=1, ARCHITECTURE.md point 7): the delivery webhook's
# worker hands the pseudonym log over to a receiver (which drops repeats by seq) at any step of
# the agent, with crashes and lost receiver answers -- through psn_log::logged_pseudonym and
# handover_window; R1 registered in an earlier run, R0 new, no send_idat. Both relisting modes.
# Every model keeps the store's pseudonym and disclosure logs by the agent's own rules in the
# commit they belong to (points 7 and 11: handover_log_matches_records,
# disclosure_log_matches_fttp); a failing store write is the crash transition (point 8:
# CycleError::into_stop).
#
# Then the withdrawal model (MODEL_WITHDRAW=1, durability point 12): the automatic model
# without repeat_request, and a local user who runs `ttp-agent withdraw case-0` at any step of
# the agent (but its registration) or while it is down -- the record's removal with the kept
# withdrawal, closing its open send_idat, the rewrite, with a crash possible between them --
# and the dispatcher's withdrawal check (both relisting modes).
#
# Then the purge model (MODEL_PURGE=1): the automatic model without repeat_request, with the
# cycle's housekeeping purging IDAT past [store] idat_retention that no open task refers to,
# and a person's `ttp-agent purge` beside the cycle (both relisting modes).
#
#   scripts/model-check.sh            the real code: every property holds (exit 0), or the
#                                     counterexample of each one that fails is printed (exit 1)
#   scripts/model-check.sh --seeded   each deliberate bug (crates/ttp-model/src/model.rs,
#                                     SeededBug) must be caught with a counterexample: proof that
#                                     the checker can fail
#   MODEL_SEEDED_BUG=<name> scripts/model-check.sh   one seeded bug: exits 1 with its trace
#
# Bounds (environment): MODEL_CRASHES (default 1), MODEL_FAULTS (lost or undelivered answers,
# default 1), MODEL_RELISTING (until_done, once, both: the default), MODEL_THREADS (default 2).
# Prints states explored, depth and time per model. About 5 minutes on 2 shared cores with the
# defaults (251-345 s: automatic model 85-140 s, approval runs 20-46 s, handover runs 42-72 s,
# withdrawal runs 57-88 s, purge runs 35-48 s; at most 760 MB resident; ARCHITECTURE.md has the
# figures); --seeded takes seconds.
# MODEL_MERGE_RACE=1 with MODEL_RELEASE=approval (not run here) lets a
# user's command commit between the merge's read and its write, as before Store::task_gate:
# it fails no_provide_after_denial (ARCHITECTURE.md, the model checker's section).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

cargo build --locked -p ttp-model --bin ttp-model
bin=target/debug/ttp-model

if [ "${1:-}" != "--seeded" ]; then
  start=$SECONDS
  "$bin"
  MODEL_RELEASE=approval MODEL_APPROVALS=2 "$bin"
  MODEL_RELEASE=approval MODEL_APPROVALS=1 MODEL_RELISTING=until_done "$bin"
  MODEL_HANDOVER=1 "$bin"
  MODEL_WITHDRAW=1 "$bin"
  MODEL_PURGE=1 "$bin"
  echo "model-check: all properties hold ($((SECONDS - start)) s)"
  exit 0
fi

failed=0
for bug in $("$bin" --list-seeded-bugs); do
  out=$(mktemp)
  set +e
  MODEL_SEEDED_BUG="$bug" MODEL_RELISTING=until_done "$bin" >"$out" 2>&1
  rc=$?
  set -e
  violated=$(grep -o 'VIOLATED [a-z_]*' "$out" | head -n 1 || true)
  # The first counterexample's steps (a bug may break more than one property).
  steps=$(awk '/VIOLATED/ { n++ } n == 1 && /^ *[0-9]+\. / { c++ } END { print c + 0 }' "$out")
  if [ "$rc" -eq 1 ] && [ -n "$violated" ] && [ "$steps" -gt 0 ]; then
    echo "model-check: seeded bug $bug caught: ${violated#VIOLATED } ($steps steps)"
    sed 's/^/    /' "$out"
  else
    echo "model-check: seeded bug $bug NOT caught (exit $rc); output:" >&2
    cat "$out" >&2
    failed=1
  fi
  rm -f "$out"
done
exit "$failed"
