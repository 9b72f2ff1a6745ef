# usage: bash run.sh NAME [k=v ...]
name=$1; shift
QS=/tmp/s8/qsF
OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 --master_port 29741 -m vlparse pretrain --config quickstart --data $QS/world/manifest.json --out /tmp/s9/$name model.text.tokenizer=$QS/tokenizer train.progress=false "$@" > /tmp/s9/$name.log 2>&1
python -c "import json;d=json.load(open('/tmp/s9/$name/summary.json'));h=d['held_out'];print('$name', '$*', round(h['itm_acc'],3), round(h['mlm_acc'],3), round(d['wall_s'],1))" >> /tmp/s9/results.txt
