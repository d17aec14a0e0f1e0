# ed completion, generated from the app by `ed completions DIR`; do not edit
_ed() {
  local cur=${COMP_WORDS[COMP_CWORD]} opts
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=( $(compgen -W "distmaps features train eval infer export demo --help --version" -- "$cur") ); return
  fi
  case "${COMP_WORDS[1]}" in
    distmaps) opts="--store --backbone --image-size --levels --grid --json --help" ;;
    features) opts="--data-path --dataset --category --store --backbone --weights --random-init --image-size --levels --normal-name --device --batch-size --num-workers --overwrite --json --quiet --help" ;;
    train) opts="--data-path --dataset --category --store --out --backbone --weights --random-init --image-size --levels --normal-name --epochs --batch-size --lr --seed --arch --intra --no-intra --inter --no-inter --layers --heads --d-model --attn-out-proj --device --precision --eval-every --select --calib-fraction --strategy --jobs --resume --num-workers --json --quiet --help" ;;
    eval) opts="--run --checkpoint --data-path --dataset --category --store --reducer --pixel-map --device --precision --batch-size --save-maps --num-workers --json --quiet --help" ;;
    infer) opts="--out --batch-size --device --precision --recursive --json --csv --save-heatmaps --no-save-heatmaps --threshold --fail-on-anomaly --num-workers --quiet --help" ;;
    export) opts="--out --opset --batch --json --quiet --help" ;;
    demo) opts="--out --category --quick --device --quiet --help" ;;
    *) opts="" ;;
  esac
  if [[ "$cur" == -* ]]; then COMPREPLY=( $(compgen -W "$opts" -- "$cur") ); fi
}
complete -o default -F _ed ed
