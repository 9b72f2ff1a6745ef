for spec in "S0 train.seed=0" "S1 train.seed=1" "S2 train.seed=2"; do
  set -- $spec; name=$1; shift
  OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 --master_port 29732 -m vlparse pretrain --config quickstart --data /tmp/s8/qs1/world/manifest.json --out /tmp/s8/$name model.text.tokenizer=/tmp/s8/qs1/tokenizer train.progress=false "$@" > /tmp/s8/$name.log 2>&1
done
echo ALLDONE
