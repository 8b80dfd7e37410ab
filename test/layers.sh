#!/bin/bash
# test/layers.sh: the folders of src/ include each other one way only (DESIGN.md section 8).
# Each folder may include the headers of the folders listed after it, and its own;
# src/novu.h (settings and limits) is open to all, the top level (novu.c, guc.c) to everything.
# Exits 1 naming every include that points the wrong way.
cd "$(dirname "$0")/../src" || exit 2
declare -A may=(
    [common]=""
    [crypto]="common"
    [template]="common"
    [net]="common"
    [providers]="common crypto net template"
    [integrations]="common crypto providers"
    [queue]="common providers"
    [outbox]="common"
    [delivery]="common crypto net template providers integrations queue"
    [api]="common outbox providers integrations template"
    [bgw]="common net queue delivery"
)
bad=0
for f in */*.[ch]; do
    dir=${f%%/*}
    if [ -z "${may[$dir]+set}" ]; then
        echo "layers: $f is in a folder with no place in the order (add it to test/layers.sh)"; bad=1; continue
    fi
    for inc in $(sed -n 's/^#include "\([a-z_]*\/[a-z_0-9]*\.h\)".*/\1/p' "$f"); do
        [ -f "$inc" ] || continue              # a PostgreSQL header (utils/..., common/hashfn.h, ...)
        to=${inc%%/*}
        [ "$to" = "$dir" ] && continue
        case " ${may[$dir]} " in *" $to "*) ;; *) echo "layers: $f includes $inc ($dir may include: ${may[$dir]:-nothing of ours})"; bad=1 ;; esac
    done
done
[ $bad = 0 ] && echo "layers: every include points down ($(ls -d */ | wc -l) folders)"
exit $bad
