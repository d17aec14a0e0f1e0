# ed completion, generated from the app by `ed completions DIR`; do not edit
complete -c ed -f -n __fish_use_subcommand -l version -d 'Show the version and exit'
complete -c ed -f -n __fish_use_subcommand -a distmaps -d 'Write squared row/column index-distance matrices for each levels token grid (store/distmaps.h5)'
complete -c ed -n '__fish_seen_subcommand_from distmaps' -l store -d 'Feature store directory (HDF5 files)' -r
complete -c ed -n '__fish_seen_subcommand_from distmaps' -l backbone -d 'timm model name with features_only support' -r
complete -c ed -n '__fish_seen_subcommand_from distmaps' -l image-size -d 'Input size S: images become S x S' -r
complete -c ed -n '__fish_seen_subcommand_from distmaps' -l levels -d 'timm feature indices, comma separated (2,3 = strides 8 and 16)' -r
complete -c ed -n '__fish_seen_subcommand_from distmaps' -l grid -d 'Grid side H (H x H tokens) instead of a backbone; repeatable' -r
complete -c ed -n '__fish_seen_subcommand_from distmaps' -l json -d 'Machine-readable JSON on stdout (nothing else)'
complete -c ed -n '__fish_seen_subcommand_from distmaps' -l help -d 'Show this message and exit'
complete -c ed -f -n __fish_use_subcommand -a features -d 'Run the frozen backbone once per category: prototypes and cached pooled features of train and test images'
complete -c ed -n '__fish_seen_subcommand_from features' -l data-path -d 'Dataset root: one folder per category' -r
complete -c ed -n '__fish_seen_subcommand_from features' -l dataset -d 'Layout of --data-path (see the READMEs table)' -r
complete -c ed -n '__fish_seen_subcommand_from features' -l category -d 'Only this category (repeatable)' -r
complete -c ed -n '__fish_seen_subcommand_from features' -l store -d 'Feature store directory (HDF5 files)' -r
complete -c ed -n '__fish_seen_subcommand_from features' -l backbone -d 'timm model name with features_only support' -r
complete -c ed -n '__fish_seen_subcommand_from features' -l weights -d 'Backbone weights file (offline use)' -r
complete -c ed -n '__fish_seen_subcommand_from features' -l random-init -d 'Untrained backbone: for tests and timing only (recorded)'
complete -c ed -n '__fish_seen_subcommand_from features' -l image-size -d 'Input size S: images become S x S' -r
complete -c ed -n '__fish_seen_subcommand_from features' -l levels -d 'timm feature indices, comma separated (2,3 = strides 8 and 16)' -r
complete -c ed -n '__fish_seen_subcommand_from features' -l normal-name -d 'Name of the normal folder for --dataset folder' -r
complete -c ed -n '__fish_seen_subcommand_from features' -l device -d 'auto, cpu, cuda, cuda:N or mps' -r
complete -c ed -n '__fish_seen_subcommand_from features' -l batch-size -d 'Images per batch' -r
complete -c ed -n '__fish_seen_subcommand_from features' -l num-workers -d 'DataLoader worker processes for image decoding' -r
complete -c ed -n '__fish_seen_subcommand_from features' -l overwrite -d 'Recompute categories already in the store'
complete -c ed -n '__fish_seen_subcommand_from features' -l json -d 'Machine-readable JSON on stdout (nothing else)'
complete -c ed -n '__fish_seen_subcommand_from features' -l quiet -d 'No progress on stderr'
complete -c ed -n '__fish_seen_subcommand_from features' -l help -d 'Show this message and exit'
complete -c ed -f -n __fish_use_subcommand -a train -d 'Train one ED model per category from the cached features (computing missing store entries first)'
complete -c ed -n '__fish_seen_subcommand_from train' -l data-path -d 'Dataset root: one folder per category' -r
complete -c ed -n '__fish_seen_subcommand_from train' -l dataset -d 'Layout of --data-path (see the READMEs table)' -r
complete -c ed -n '__fish_seen_subcommand_from train' -l category -d 'Only this category (repeatable)' -r
complete -c ed -n '__fish_seen_subcommand_from train' -l store -d 'Feature store directory (HDF5 files)' -r
complete -c ed -n '__fish_seen_subcommand_from train' -l out -d 'Run folder: checkpoints/<category>.pt, run.json, metrics' -r
complete -c ed -n '__fish_seen_subcommand_from train' -l backbone -d 'timm model name with features_only support' -r
complete -c ed -n '__fish_seen_subcommand_from train' -l weights -d 'Backbone weights file (offline use)' -r
complete -c ed -n '__fish_seen_subcommand_from train' -l random-init -d 'Untrained backbone: for tests and timing only (recorded)'
complete -c ed -n '__fish_seen_subcommand_from train' -l image-size -d 'Input size S: images become S x S' -r
complete -c ed -n '__fish_seen_subcommand_from train' -l levels -d 'timm feature indices, comma separated (2,3 = strides 8 and 16)' -r
complete -c ed -n '__fish_seen_subcommand_from train' -l normal-name -d 'Name of the normal folder for --dataset folder' -r
complete -c ed -n '__fish_seen_subcommand_from train' -l epochs -d 'Training epochs per category' -r
complete -c ed -n '__fish_seen_subcommand_from train' -l batch-size -d 'Images per batch' -r
complete -c ed -n '__fish_seen_subcommand_from train' -l lr -d 'Adam learning rate' -r
complete -c ed -n '__fish_seen_subcommand_from train' -l seed -d 'Random seed (reset per category, as the reference)' -r
complete -c ed -n '__fish_seen_subcommand_from train' -l arch -d 'ed, or fod (subtraction fusion, plain MLP, fixed temperature)' -r
complete -c ed -n '__fish_seen_subcommand_from train' -l intra -d 'Intra-image (self-attention) branch'
complete -c ed -n '__fish_seen_subcommand_from train' -l no-intra -d 'Intra-image (self-attention) branch'
complete -c ed -n '__fish_seen_subcommand_from train' -l inter -d 'Inter-image (prototype cross-attention) branch'
complete -c ed -n '__fish_seen_subcommand_from train' -l no-inter -d 'Inter-image (prototype cross-attention) branch'
complete -c ed -n '__fish_seen_subcommand_from train' -l layers -d 'Encoder layers per level' -r
complete -c ed -n '__fish_seen_subcommand_from train' -l heads -d 'Attention heads' -r
complete -c ed -n '__fish_seen_subcommand_from train' -l d-model -d 'Model width per level, comma separated' -r
complete -c ed -n '__fish_seen_subcommand_from train' -l attn-out-proj -d 'Apply the attention output projection (the reference discards it)'
complete -c ed -n '__fish_seen_subcommand_from train' -l device -d 'auto, cpu, cuda, cuda:N or mps' -r
complete -c ed -n '__fish_seen_subcommand_from train' -l precision -d 'fp32, bf16 or fp16 (autocast on GPU)' -r
complete -c ed -n '__fish_seen_subcommand_from train' -l eval-every -d 'Evaluate on the test split every N epochs (0: never)' -r
complete -c ed -n '__fish_seen_subcommand_from train' -l select -d 'last (honest), best-image or best-pixel (test-selected)' -r
complete -c ed -n '__fish_seen_subcommand_from train' -l calib-fraction -d 'Share of normal train images held out for the threshold' -r
complete -c ed -n '__fish_seen_subcommand_from train' -l strategy -d 'Under torchrun: categories (one per rank) or ddp (one category data-parallel)' -r
complete -c ed -n '__fish_seen_subcommand_from train' -l jobs -d 'Categories trained side by side in worker processes' -r
complete -c ed -n '__fish_seen_subcommand_from train' -l resume -d 'Continue from the last completed epoch'
complete -c ed -n '__fish_seen_subcommand_from train' -l num-workers -d 'DataLoader worker processes for image decoding' -r
complete -c ed -n '__fish_seen_subcommand_from train' -l json -d 'Machine-readable JSON on stdout (nothing else)'
complete -c ed -n '__fish_seen_subcommand_from train' -l quiet -d 'No progress on stderr'
complete -c ed -n '__fish_seen_subcommand_from train' -l help -d 'Show this message and exit'
complete -c ed -f -n __fish_use_subcommand -a eval -d 'Score the labelled test split; per-category metrics and their mean; writes metrics.json and metrics.csv'
complete -c ed -n '__fish_seen_subcommand_from eval' -l run -d 'Run folder written by `ed train --out`' -r
complete -c ed -n '__fish_seen_subcommand_from eval' -l checkpoint -d 'One checkpoint file instead of a run' -r
complete -c ed -n '__fish_seen_subcommand_from eval' -l data-path -d 'Dataset root: one folder per category' -r
complete -c ed -n '__fish_seen_subcommand_from eval' -l dataset -d 'Layout of --data-path (default: the checkpoints)' -r
complete -c ed -n '__fish_seen_subcommand_from eval' -l category -d 'Only this category (repeatable)' -r
complete -c ed -n '__fish_seen_subcommand_from eval' -l store -d 'Feature store (default: the runs)' -r
complete -c ed -n '__fish_seen_subcommand_from eval' -l reducer -d 'Image score from the smoothed map: max, mean or topk:<ratio>' -r
complete -c ed -n '__fish_seen_subcommand_from eval' -l pixel-map -d 'Map for pixel metrics: raw (unsmoothed, as the reference) or smoothed' -r
complete -c ed -n '__fish_seen_subcommand_from eval' -l device -d 'auto, cpu, cuda, cuda:N or mps' -r
complete -c ed -n '__fish_seen_subcommand_from eval' -l precision -d 'fp32, bf16 or fp16 (autocast on GPU)' -r
complete -c ed -n '__fish_seen_subcommand_from eval' -l batch-size -d 'Images per batch' -r
complete -c ed -n '__fish_seen_subcommand_from eval' -l save-maps -d 'Write raw maps (.npy) and heat-map PNGs per test image'
complete -c ed -n '__fish_seen_subcommand_from eval' -l num-workers -d 'DataLoader worker processes for image decoding' -r
complete -c ed -n '__fish_seen_subcommand_from eval' -l json -d 'Machine-readable JSON on stdout (nothing else)'
complete -c ed -n '__fish_seen_subcommand_from eval' -l quiet -d 'No progress on stderr'
complete -c ed -n '__fish_seen_subcommand_from eval' -l help -d 'Show this message and exit'
complete -c ed -f -n __fish_use_subcommand -a infer -d 'Score any images with a checkpoint: predictions.csv/.jsonl, heat maps, masks and raw maps'
complete -c ed -n '__fish_seen_subcommand_from infer' -l out -d 'Output folder for predictions and heat maps' -r
complete -c ed -n '__fish_seen_subcommand_from infer' -l batch-size -d 'Images per batch' -r
complete -c ed -n '__fish_seen_subcommand_from infer' -l device -d 'auto, cpu, cuda, cuda:N or mps' -r
complete -c ed -n '__fish_seen_subcommand_from infer' -l precision -d 'fp32, bf16 or fp16 (autocast on GPU)' -r
complete -c ed -n '__fish_seen_subcommand_from infer' -l recursive -d 'Descend into sub-folders'
complete -c ed -n '__fish_seen_subcommand_from infer' -l json -d 'Machine-readable JSON on stdout (nothing else)'
complete -c ed -n '__fish_seen_subcommand_from infer' -l csv -d 'CSV rows on stdout'
complete -c ed -n '__fish_seen_subcommand_from infer' -l save-heatmaps -d 'Heat-map PNGs, predicted masks and raw maps'
complete -c ed -n '__fish_seen_subcommand_from infer' -l no-save-heatmaps -d 'Heat-map PNGs, predicted masks and raw maps'
complete -c ed -n '__fish_seen_subcommand_from infer' -l threshold -d 'Override the checkpoints calibrated threshold (raw score)' -r
complete -c ed -n '__fish_seen_subcommand_from infer' -l fail-on-anomaly -d 'Exit 3 when any image is anomalous'
complete -c ed -n '__fish_seen_subcommand_from infer' -l num-workers -d 'DataLoader worker processes for image decoding' -r
complete -c ed -n '__fish_seen_subcommand_from infer' -l quiet -d 'No progress on stderr'
complete -c ed -n '__fish_seen_subcommand_from infer' -l help -d 'Show this message and exit'
complete -c ed -f -n __fish_use_subcommand -a export -d 'Export a checkpoint as one ONNX graph (images -> raw map, smoothed map, score) with its calibration'
complete -c ed -n '__fish_seen_subcommand_from export' -l out -d 'The .onnx file' -r
complete -c ed -n '__fish_seen_subcommand_from export' -l opset -d 'ONNX opset version (13..20)' -r
complete -c ed -n '__fish_seen_subcommand_from export' -l batch -d 'Batch size of the graph: a number, or dynamic' -r
complete -c ed -n '__fish_seen_subcommand_from export' -l json -d 'Machine-readable JSON on stdout (nothing else)'
complete -c ed -n '__fish_seen_subcommand_from export' -l quiet -d 'No progress on stderr'
complete -c ed -n '__fish_seen_subcommand_from export' -l help -d 'Show this message and exit'
complete -c ed -f -n __fish_use_subcommand -a demo -d 'Make a small MVTec-layout dataset from real textures with injected defects and run the whole pipeline on it'
complete -c ed -n '__fish_seen_subcommand_from demo' -l out -d 'Demo folder (dataset, store, run, predictions)' -r
complete -c ed -n '__fish_seen_subcommand_from demo' -l category -d 'Only this category (repeatable)' -r
complete -c ed -n '__fish_seen_subcommand_from demo' -l quick -d 'A sub-minute version (smaller images, fewer epochs)'
complete -c ed -n '__fish_seen_subcommand_from demo' -l device -d 'auto, cpu, cuda, cuda:N or mps' -r
complete -c ed -n '__fish_seen_subcommand_from demo' -l quiet -d 'No progress on stderr'
complete -c ed -n '__fish_seen_subcommand_from demo' -l help -d 'Show this message and exit'
