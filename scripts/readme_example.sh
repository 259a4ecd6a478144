#!/usr/bin/env bash
# Reproduces the README's example end to end on this machine (CPU, ~15 minutes):
# hold out every 4th photo of ../shared/data/coco-sample, train the tiny head (MobileSAM tokens,
# COCO text bank, no CLIP vision) on the others, evaluate it on the held-out photos with their
# ground-truth boxes, and draw one held-out photo. Writes under runs/readme-example/.
set -euo pipefail
cd "$(dirname "$0")/.."
RS=.venv/bin/regionspot
OUT=runs/readme-example
SAMPLE=../shared/data/coco-sample
mkdir -p "$OUT"
.venv/bin/python - "$SAMPLE/annotations.json" "$OUT" <<'PY'
import json, sys
from pathlib import Path
doc = json.loads(Path(sys.argv[1]).read_text())
images = sorted(doc["images"], key=lambda image: image["id"])
held_out = {image["id"] for image in images[3::4]}
for name, keep in (("train", lambda i: i not in held_out), ("heldout", lambda i: i in held_out)):
    part = dict(doc, images=[im for im in images if keep(im["id"])],
                annotations=[a for a in doc["annotations"] if keep(a["image_id"])])
    Path(sys.argv[2], f"{name}.json").write_text(json.dumps(part))
    print(f"{name}: {len(part['images'])} images, {len(part['annotations'])} boxes")
PY
SPLIT=(datasets.0.annotations=$OUT/train.json datasets.0.token_cache=$OUT/tokens/train
       eval_dataset.annotations=$OUT/heldout.json eval_dataset.token_cache=$OUT/tokens/heldout
       output_dir=$OUT/train)
$RS extract-tokens --data configs/tiny_coco_sample.yaml --no-flip --set "${SPLIT[@]}"
$RS train configs/tiny_coco_sample.yaml --set "${SPLIT[@]}" --no-progress
$RS eval --data $OUT/heldout.json --images $SAMPLE/images --checkpoint $OUT/train/final \
    --boxes gt --masks --out $OUT/eval-heldout --no-progress
FIRST=$(.venv/bin/python -c "import json;d=json.load(open('$OUT/heldout.json'));i=d['images'][1];b=[a['bbox'] for a in d['annotations'] if a['image_id']==i['id'] and not a['iscrowd']];print(i['file_name']);print(';'.join(','.join(str(round(v)) for v in (x,y,x+w,y+h)) for x,y,w,h in b))")
IMAGE=$(echo "$FIRST" | sed -n 1p); BOXES=$(echo "$FIRST" | sed -n 2p)
$RS predict "$SAMPLE/images/$IMAGE" --boxes "$BOXES" --vocab coco --checkpoint $OUT/train/final \
    --out $OUT/example.json --viz $OUT/example.png
echo "example picture: $OUT/example.png"
