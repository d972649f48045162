set -x
cd /work/wt/effnet
T=target/debug/linesight-train
O=target/lite0-speed
for b in mobilenet-v2 efficientnet-lite0; do
  $T --log warn --json prototypes --backbone $b --manifest $O/train2.csv --split train --out $O/$b.lsb --model-id cub26-$b > $O/$b-f32.json
  $T --log warn --json quantize --bundle $O/$b.lsb --calibration ../shared/data/cub26/manifest.csv --calibration-split train \
     --calibration-images 64 --parity ../shared/data/cub26/manifest.csv --parity-split test --parity-images 100 \
     --keep-slow-layers --allow-slower --allow-parity-drop --out $O/$b-int8.lsb > $O/$b-int8.json
done
ls -l $O
