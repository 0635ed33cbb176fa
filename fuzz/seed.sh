#!/usr/bin/env bash
# Builds fuzz/corpus/<target>/ from seeds.txt (testdata photos) and the README's wish examples.
set -euo pipefail
cd "$(dirname "$0")"
photos=../../shared/testdata/photos
mkdir -p corpus/decode_overlay corpus/wishes
captions=("Привет 🔥" "Hello, world" "крупный белый текст снизу на чёрной плашке 50%")
i=0
grep -v '^#' seeds.txt | while read -r name; do
  [ -n "$name" ] || continue
  for caption in "${captions[@]}"; do
    len=$(printf '%s' "$caption" | wc -c)
    { printf "\\$(printf '%03o' "$len")"; printf '%s' "$caption"; cat "$photos/$name"; } > "corpus/decode_overlay/seed-$i"
    i=$((i + 1))
  done
done
j=0
while IFS= read -r wish; do
  printf '%s' "$wish" > "corpus/wishes/seed-$j"
  j=$((j + 1))
done <<'WISHES'
крупный белый текст снизу на чёрной плашке 50%
huge #ff0 top, no plate, margin 10%
мелкий красный по центру без плашки
large yellow text at the bottom on a white plate 80% blur 12
отступ 20% размытие 20 48px
синий фон красный бантик
WISHES
