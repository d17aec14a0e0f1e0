# ed completion, generated from the app by `ed completions DIR`; do not edit
_ed() {
  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} opts
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=( $(compgen -W "distmaps features train eval infer export report demo --help --version" -- "$cur") ); return
  fi
  case "${COMP_WORDS[1]}" in
    distmaps)
      opts="--store -s --backbone -b --image-size --levels --grid --json --help -h"
      case "$prev" in
        --store|-s) COMPREPLY=( $(compgen -d -- "$cur") ); return ;;
        --backbone|-b) return ;;
        --image-size) return ;;
        --levels) return ;;
        --grid) return ;;
      esac ;;
    features)
      opts="--data-path -p --dataset -d --category -c --store -s --backbone -b --weights --random-init --image-size --levels --normal-name --test-fraction --seed --device --batch-size --num-workers --overwrite --json --quiet -q --help -h"
      case "$prev" in
        --data-path|-p) COMPREPLY=( $(compgen -d -- "$cur") ); return ;;
        --dataset|-d) COMPREPLY=( $(compgen -W "mvtec btad mvtec3d folder" -- "$cur") ); return ;;
        --category|-c) return ;;
        --store|-s) COMPREPLY=( $(compgen -d -- "$cur") ); return ;;
        --backbone|-b) return ;;
        --weights) return ;;
        --image-size) return ;;
        --levels) return ;;
        --normal-name) return ;;
        --test-fraction) return ;;
        --seed) return ;;
        --device) COMPREPLY=( $(compgen -W "auto cpu cuda mps" -- "$cur") ); return ;;
        --batch-size) return ;;
        --num-workers) return ;;
      esac ;;
    train)
      opts="--data-path -p --dataset -d --category -c --store -s --out -o --backbone -b --weights --random-init --image-size --levels --normal-name --test-fraction --epochs --batch-size --lr --seed --arch --intra --no-intra --inter --no-inter --layers --heads --d-model --attn-out-proj --device --precision --eval-every --select --val-fraction --calib-fraction --strategy --jobs -j --optimizer --lr-schedule --warmup-epochs --average --ema-decay --swa-start --score --resume --overwrite --num-workers --json --quiet -q --help -h"
      case "$prev" in
        --data-path|-p) COMPREPLY=( $(compgen -d -- "$cur") ); return ;;
        --dataset|-d) COMPREPLY=( $(compgen -W "mvtec btad mvtec3d folder" -- "$cur") ); return ;;
        --category|-c) return ;;
        --store|-s) COMPREPLY=( $(compgen -d -- "$cur") ); return ;;
        --out|-o) COMPREPLY=( $(compgen -d -- "$cur") ); return ;;
        --backbone|-b) return ;;
        --weights) return ;;
        --image-size) return ;;
        --levels) return ;;
        --normal-name) return ;;
        --test-fraction) return ;;
        --epochs) return ;;
        --batch-size) return ;;
        --lr) return ;;
        --seed) return ;;
        --arch) COMPREPLY=( $(compgen -W "ed fod" -- "$cur") ); return ;;
        --layers) return ;;
        --heads) return ;;
        --d-model) return ;;
        --device) COMPREPLY=( $(compgen -W "auto cpu cuda mps" -- "$cur") ); return ;;
        --precision) COMPREPLY=( $(compgen -W "fp32 bf16 fp16" -- "$cur") ); return ;;
        --eval-every) return ;;
        --select) COMPREPLY=( $(compgen -W "last best-image best-pixel validation" -- "$cur") ); return ;;
        --val-fraction) return ;;
        --calib-fraction) return ;;
        --strategy) COMPREPLY=( $(compgen -W "auto categories ddp" -- "$cur") ); return ;;
        --jobs|-j) return ;;
        --optimizer) COMPREPLY=( $(compgen -W "reference per-level" -- "$cur") ); return ;;
        --lr-schedule) COMPREPLY=( $(compgen -W "constant cosine" -- "$cur") ); return ;;
        --warmup-epochs) return ;;
        --average) COMPREPLY=( $(compgen -W "none ema swa" -- "$cur") ); return ;;
        --ema-decay) return ;;
        --swa-start) return ;;
        --score) COMPREPLY=( $(compgen -W "ed rec rec-kl" -- "$cur") ); return ;;
        --num-workers) return ;;
      esac ;;
    eval)
      opts="--run -r --checkpoint --data-path -p --dataset -d --category -c --store -s --reducer --score --pixel-map --device --precision --batch-size --save-maps --num-workers --json --quiet -q --help -h"
      case "$prev" in
        --run|-r) COMPREPLY=( $(compgen -d -- "$cur") ); return ;;
        --checkpoint) return ;;
        --data-path|-p) COMPREPLY=( $(compgen -d -- "$cur") ); return ;;
        --dataset|-d) COMPREPLY=( $(compgen -W "mvtec btad mvtec3d folder" -- "$cur") ); return ;;
        --category|-c) return ;;
        --store|-s) COMPREPLY=( $(compgen -d -- "$cur") ); return ;;
        --reducer) COMPREPLY=( $(compgen -W "max mean" -- "$cur") ); return ;;
        --score) COMPREPLY=( $(compgen -W "ed rec rec-kl" -- "$cur") ); return ;;
        --pixel-map) COMPREPLY=( $(compgen -W "raw smoothed" -- "$cur") ); return ;;
        --device) COMPREPLY=( $(compgen -W "auto cpu cuda mps" -- "$cur") ); return ;;
        --precision) COMPREPLY=( $(compgen -W "fp32 bf16 fp16" -- "$cur") ); return ;;
        --batch-size) return ;;
        --num-workers) return ;;
      esac ;;
    infer)
      opts="--out -o --batch-size --device --precision --recursive -R --max-pixels --shard --json --csv --save-heatmaps --no-save-heatmaps --save-raw-maps --resume --overwrite --threshold --fail-on-anomaly --engine --num-workers --quiet -q --help -h"
      case "$prev" in
        --out|-o) COMPREPLY=( $(compgen -d -- "$cur") ); return ;;
        --batch-size) return ;;
        --device) COMPREPLY=( $(compgen -W "auto cpu cuda mps" -- "$cur") ); return ;;
        --precision) COMPREPLY=( $(compgen -W "fp32 bf16 fp16" -- "$cur") ); return ;;
        --max-pixels) return ;;
        --shard) return ;;
        --save-heatmaps) COMPREPLY=( $(compgen -W "auto all anomalous none" -- "$cur") ); return ;;
        --threshold) return ;;
        --engine) COMPREPLY=( $(compgen -W "torch ray" -- "$cur") ); return ;;
        --num-workers) return ;;
      esac ;;
    export)
      opts="--out -o --opset --batch --json --quiet -q --help -h"
      case "$prev" in
        --out|-o) return ;;
        --opset) return ;;
        --batch) COMPREPLY=( $(compgen -W "dynamic" -- "$cur") ); return ;;
      esac ;;
    report)
      opts="--out -o --json --quiet -q --help -h"
      case "$prev" in
        --out|-o) return ;;
      esac ;;
    demo)
      opts="--out -o --category -c --quick --seed --device --quiet -q --help -h"
      case "$prev" in
        --out|-o) COMPREPLY=( $(compgen -d -- "$cur") ); return ;;
        --category|-c) return ;;
        --seed) return ;;
        --device) COMPREPLY=( $(compgen -W "auto cpu cuda mps" -- "$cur") ); return ;;
      esac ;;
    *) opts="" ;;
  esac
  if [[ "$cur" == -* ]]; then COMPREPLY=( $(compgen -W "$opts" -- "$cur") ); fi
}
complete -o default -F _ed ed
