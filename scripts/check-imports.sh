#!/usr/bin/env bash
# Checks claims of ARCHITECTURE.md that the compiler does not:
#
# 1. The modules of `src/` import each other without a cycle, at the granularity of the
#    top-level modules (`agent`, `store`, `submit`, ...). Every `crate::` path of a file counts,
#    grouped imports (`use crate::{a, b::c}`) included. `testkit` (fixtures for the tests,
#    not built into the shipped binary) is outside the graph: tests of any module use it.
# 2. Task and record state are changed only by the domain's transitions: outside
#    `src/domain/` no code (tests aside) assigns a `TaskState` or `RecordState` to a `state`.
# 3. ARCHITECTURE.md's import graph (the block after `<!-- scripts/check-imports.sh --graph -->`)
#    is the code's: a changed import changes that block in the same commit.
# 4. Meta keys and hand-over consumer names are the store's: outside `src/store/` no code (tests
#    aside) defines a `META_…` or `…_CONSUMER` constant or passes a string literal where the
#    store takes a meta name or a consumer (`meta_time`, `set_meta_string`, `export_cursor`, …).
# 5. Every arrow of the layering summary above the graph ("Dependencies point one way") is an
#    import of the code.
# 6. The module map's other structural claims, each a grep over the code of the files it
#    names: only `src/store/` touches redb; the client builds and parses the wire format only
#    in `client/wire.rs`; the task handlers do not open the store; the modules it calls pure
#    read no clock, file, network or store; `agent/dispatch.rs` matches on the task type once;
#    the simulator does not use ttp-proto; ttp-encode and ttp-proto use no network or runtime
#    (files: only a profile's, in ttp-encode's profile.rs); ttp-model reaches the agent only
#    through `real.rs`; no integration test is a binary of its own (`tests/*.rs`).
#
# Run by scripts/test.sh (the CI test command). Needs only bash and perl.
#
#   scripts/check-imports.sh           check
#   scripts/check-imports.sh --graph   also print each module's imports
set -euo pipefail
cd "$(dirname "$0")/.."

failed=0
find src -name '*.rs' | sort | GRAPH="${1:-}" perl -e '
use strict;
use warnings;
my (%edges, %nodes, @writes, @names);
while (my $file = <STDIN>) {
    chomp $file;
    my ($from) = $file =~ m{^src/([A-Za-z0-9_]+)};
    open my $fh, "<", $file or die "$file: $!";
    my $text = do { local $/; <$fh> };
    close $fh;
    $text =~ s{//[^\n]*}{}g;                  # comments, doc comments included
    (my $code = $text) =~ s{#\[cfg\(test\)\].*}{}s;   # unit tests sit at the end of a file
    while ($code =~ m{^(.*\.state\s*=\s*(?:Task|Record)State::.*)$}mg) {
        push @writes, "$file: $1" unless $file =~ m{^src/domain[/.]};
    }
    unless ($file =~ m{^src/store/}) {
        while ($code =~ m{^(.*\bconst\s+(?:META_\w+|\w+_CONSUMER)\b.*)$}mg) {
            push @names, "$file: $1";
        }
        while ($code =~ m{\b((?:set_)?meta_time|(?:get|set)_meta_string|(?:set_)?export_cursor|pending_events)\(\s*(?:b?")}g) {
            push @names, "$file: $1(\"…\")";
        }
    }
    next if $from eq "lib" || $from eq "main" || $from eq "testkit";
    $nodes{$from} = 1;
    while ($text =~ m{crate::(\{(?:[^{}]++|(?1))*\})}g) {
        my $group = substr($1, 1, -1);
        1 while $group =~ s{\{[^{}]*\}}{}g;
        for my $item (split /,/, $group) {
            $edges{$from}{$1} //= $file if $item =~ m{^\s*([A-Za-z0-9_]+)};
        }
    }
    $edges{$from}{$1} //= $file while $text =~ m{\bcrate::([A-Za-z0-9_]+)\b}g;
}
# Nodes are the top-level modules; an item of lib.rs (`crate::Foo`) is not one.
for my $from (keys %edges) {
    for my $to (keys %{ $edges{$from} }) {
        delete $edges{$from}{$to} if $to eq $from || !$nodes{$to};
    }
}
my @graph = map {
    (my $line = sprintf "%-10s -> %s", $_, join(", ", sort keys %{ $edges{$_} // {} })) =~ s/\s+$//;
    $line
} sort keys %nodes;
print "$_\n" for (($ENV{GRAPH} // "") eq "--graph" ? @graph : ());
my (%state, @stack, @cycles);
sub visit {
    my ($n) = @_;
    $state{$n} = 1;
    push @stack, $n;
    for my $m (sort keys %{ $edges{$n} // {} }) {
        if (($state{$m} // 0) == 1) {
            my ($at) = grep { $stack[$_] eq $m } 0 .. $#stack;
            push @cycles, [ @stack[ $at .. $#stack ], $m ];
        } elsif (!$state{$m}) {
            visit($m);
        }
    }
    pop @stack;
    $state{$n} = 2;
}
visit($_) for sort keys %nodes;
my $failed = 0;
if (@cycles) {
    print STDERR "import cycle(s) between the modules of src/ (module -> module (first file)):\n";
    for my $c (@cycles) {
        print STDERR "  ", join(", ", map { "$c->[$_] -> $c->[$_+1] ($edges{$c->[$_]}{$c->[$_+1]})" } 0 .. $#$c - 1), "\n";
    }
    $failed = 1;
} else {
    printf "no import cycle among the %d top-level modules of src/\n", scalar keys %nodes;
}
open my $arch, "<", "ARCHITECTURE.md" or die "ARCHITECTURE.md: $!";
my $doc = do { local $/; <$arch> };
close $arch;
my ($block) = $doc =~ m{<!-- scripts/check-imports\.sh --graph -->\s*```[a-z]*\n(.*?)```}s;
my @documented = map { s/\s+$//r } split /\n/, $block // "";
if (join("\n", @documented) ne join("\n", @graph)) {
    print STDERR "ARCHITECTURE.md'"'"'s import graph differs from the code'"'"'s; replace its block with:\n";
    print STDERR "  $_\n" for @graph;
    $failed = 1;
} else {
    print "ARCHITECTURE.md'"'"'s import graph is the code'"'"'s\n";
}
if (@writes) {
    print STDERR "task or record state assigned outside src/domain/ (use a TaskRecord or RecordHead transition):\n";
    print STDERR "  $_\n" for @writes;
    $failed = 1;
} else {
    print "task and record state are assigned only in src/domain/\n";
}
if (@names) {
    print STDERR "meta key or hand-over consumer named outside src/store/ (use the store constant or HandoverConsumer):\n";
    print STDERR "  $_\n" for @names;
    $failed = 1;
} else {
    print "meta keys and hand-over consumers are named only in src/store/\n";
}
# The layering summary above the graph (`cli → admin → status → …`): every arrow is an import.
my ($summary) = $doc =~ m{Dependencies point one way.*?```[a-z]*\n(.*?)```}s;
my @arrows;
for my $line (split /\n/, $summary // "") {
    for my $chain (split /\s{3,}/, $line) {
        (my $c = $chain) =~ s/\([^)]*\)//g;
        my @steps = map { [ grep { length } map { s/^\s+|\s+$//gr } split /,/ ] } split /\x{e2}\x{86}\x{92}/, $c;
        for my $i (0 .. $#steps - 1) {
            for my $from (@{ $steps[$i] }) {
                for my $to (@{ $steps[$i + 1] }) {
                    push @arrows, "$from -> $to" unless $edges{$from}{$to};
                }
            }
        }
    }
}
if (!defined $summary) {
    print STDERR "ARCHITECTURE.md: no block after \"Dependencies point one way\"\n";
    $failed = 1;
} elsif (@arrows) {
    print STDERR "ARCHITECTURE.md'"'"'s dependency summary names imports the code does not have:\n";
    print STDERR "  $_\n" for @arrows;
    $failed = 1;
} else {
    print "every arrow of ARCHITECTURE.md'"'"'s dependency summary is an import\n";
}
exit $failed;
' || failed=1

# The other structural claims of ARCHITECTURE.md's module map, each a grep over the code of
# the files it names (comments and the unit tests at the end of a file left out).
code() { perl -0777 -pe 's{//[^\n]*}{}g; s{#\[cfg\(test\)\].*}{}s' "$@"; }
claim() { # claim DESCRIPTION OFFENDERS...: fails when any offender is named
  local what=$1
  shift
  if [ "$#" -gt 0 ]; then
    printf 'not true: %s:\n' "$what" >&2
    printf '  %s\n' "$@" >&2
    failed=1
  else
    printf '%s\n' "$what"
  fi
}
offenders() { # offenders REGEX FILES...: the files whose code matches REGEX
  local re=$1 f
  shift
  for f in "$@"; do
    if code "$f" | grep -Eq -- "$re"; then printf '%s\n' "$f"; fi
  done
}
mapfile -t outside_store < <(find src -name '*.rs' ! -path 'src/store/*' | sort)
claim "only src/store/ touches redb" \
  $(offenders '\bredb::|use redb\b' "${outside_store[@]}")
mapfile -t client < <(find src/client -name '*.rs' ! -name wire.rs | sort)
claim "the client builds and parses the wire format only in client/wire.rs" \
  $(offenders 'ttp_proto::(ops::[a-z_]+|task::parse_|parse_tasks|outcome::|parameters::|Parameters\b)' "${client[@]}")
mapfile -t handlers < <(find src/agent/handlers -name '*.rs' | sort)
claim "the task handlers do not open the store" \
  $(offenders '\bStore\b|\.store\(\)' "${handlers[@]}")
mapfile -t pure < <(find src/domain src/agent/handlers src/submit/input -name '*.rs'; \
  printf '%s\n' src/agent/merge.rs src/agent/plan.rs src/agent/retry.rs src/admin/view.rs \
  src/cli/control/wire.rs)
claim "the modules ARCHITECTURE.md calls pure read no clock, file, network or store" \
  $(offenders 'Utc::now|SystemTime::now|Instant::now|std::fs|File::|std::net|tokio::|reqwest|\bStore\b' "${pure[@]}")
matches=()
for kind in DicPsnAvailable SendIdat RepeatRequest Unknown; do
  n=$(code src/agent/dispatch.rs | grep -c "TaskKind::$kind\b" || true)
  [ "$n" -le 1 ] || matches+=("TaskKind::$kind named $n times")
done
claim "agent/dispatch.rs matches on the task type once" "${matches[@]}"
mapfile -t sim < <(find crates/ttp-sim/src -name '*.rs' | sort)
claim "the simulator is not built on ttp-proto (a codec of its own)" \
  $(grep -El '^\s*ttp-proto\b' crates/ttp-sim/Cargo.toml) $(offenders 'ttp_proto' "${sim[@]}")
mapfile -t pure_crates < <(find crates/ttp-encode/src crates/ttp-proto/src -name '*.rs' | sort)
claim "ttp-encode and ttp-proto use no network, runtime or store" \
  $(offenders 'std::net|tokio|reqwest|hyper|redb' "${pure_crates[@]}")
mapfile -t no_files < <(printf '%s\n' "${pure_crates[@]}" | grep -v '^crates/ttp-encode/src/profile.rs$')
claim "of ttp-encode and ttp-proto only ttp-encode's profile.rs reads files (a profile's secret and schema)" \
  $(offenders 'std::fs|File::' "${no_files[@]}")
mapfile -t model < <(find crates/ttp-model/src -name '*.rs' ! -name real.rs | sort)
claim "crates/ttp-model/src/real.rs is the model's only seam to the agent" \
  $(offenders 'ttp_agent::' "${model[@]}")
claim "integration tests are modules of tests/it or tests/soak, not binaries of their own" \
  $(find tests -maxdepth 1 -name '*.rs' | sort)
exit "$failed"
