# ed completion, generated from the app by `ed completions DIR`; do not edit
complete -c ed -f -n __fish_use_subcommand -l version -d 'Show the version and exit'
complete -c ed -f -n __fish_use_subcommand -a distmaps -d 'Write squared row/column index-distance matrices for each level\'s token grid (store/distmaps.h5)'
complete -c ed -n '__fish_seen_subcommand_from distmaps' -l store -s s -d 'Feature store directory (HDF5 files)' -x -a '(__fish_complete_directories)'
complete -c ed -n '__fish_seen_subcommand_from distmaps' -l backbone -s b -d 'timm model name with features_only support' -x
complete -c ed -n '__fish_seen_subcommand_from distmaps' -l image-size -d 'Input size S in pixels: images become S x S' -x
complete -c ed -n '__fish_seen_subcommand_from distmaps' -l levels -d 'timm feature indices, comma separated (2,3 = strides 8 and 16)' -x
complete -c ed -n '__fish_seen_subcommand_from distmaps' -l grid -d 'Grid side H (H x H tokens) instead of a backbone; repeatable' -x
complete -c ed -n '__fish_seen_subcommand_from distmaps' -l json -d 'Machine-readable JSON on stdout (nothing else)'
complete -c ed -n '__fish_seen_subcommand_from distmaps' -l help -s h -d 'Show this message and exit'
complete -c ed -f -n __fish_use_subcommand -a features -d 'Run the frozen backbone once per category: prototypes and cached pooled features of train and test images'
complete -c ed -n '__fish_seen_subcommand_from features' -l data-path -s p -d 'Dataset root: one folder per category' -x -a '(__fish_complete_directories)'
complete -c ed -n '__fish_seen_subcommand_from features' -l dataset -s d -d 'Layout of --data-path (see the README\'s table)' -x -a 'mvtec btad mvtec3d folder'
complete -c ed -n '__fish_seen_subcommand_from features' -l category -s c -d 'Only this category (repeatable)' -x
complete -c ed -n '__fish_seen_subcommand_from features' -l store -s s -d 'Feature store directory (HDF5 files)' -x -a '(__fish_complete_directories)'
complete -c ed -n '__fish_seen_subcommand_from features' -l backbone -s b -d 'timm model name with features_only support' -x
complete -c ed -n '__fish_seen_subcommand_from features' -l weights -d 'Backbone weights file (offline use)' -r -F
complete -c ed -n '__fish_seen_subcommand_from features' -l random-init -d 'Untrained backbone: for tests and timing only (recorded)'
complete -c ed -n '__fish_seen_subcommand_from features' -l image-size -d 'Input size S in pixels: images become S x S' -x
complete -c ed -n '__fish_seen_subcommand_from features' -l levels -d 'timm feature indices, comma separated (2,3 = strides 8 and 16)' -x
complete -c ed -n '__fish_seen_subcommand_from features' -l normal-name -d 'Name of the normal folder for --dataset folder' -x
complete -c ed -n '__fish_seen_subcommand_from features' -l test-fraction -d '--dataset folder without test/: this share of the normal images becomes the (normal-only) test split, picked by the seed' -x
complete -c ed -n '__fish_seen_subcommand_from features' -l seed -d 'Picks the --test-fraction images (ed train\'s --seed)' -x
complete -c ed -n '__fish_seen_subcommand_from features' -l device -d 'Where to compute; auto: cuda, then mps, then cpu' -x -a 'auto cpu cuda mps'
complete -c ed -n '__fish_seen_subcommand_from features' -l batch-size -d 'Images per batch' -x
complete -c ed -n '__fish_seen_subcommand_from features' -l num-workers -d 'DataLoader worker processes for image decoding' -x
complete -c ed -n '__fish_seen_subcommand_from features' -l overwrite -d 'Recompute categories already in the store'
complete -c ed -n '__fish_seen_subcommand_from features' -l json -d 'Machine-readable JSON on stdout (nothing else)'
complete -c ed -n '__fish_seen_subcommand_from features' -l quiet -s q -d 'No progress on stderr'
complete -c ed -n '__fish_seen_subcommand_from features' -l help -s h -d 'Show this message and exit'
complete -c ed -f -n __fish_use_subcommand -a train -d 'Train one ED model per category from the cached features (computing missing store entries first)'
complete -c ed -n '__fish_seen_subcommand_from train' -l data-path -s p -d 'Dataset root: one folder per category' -x -a '(__fish_complete_directories)'
complete -c ed -n '__fish_seen_subcommand_from train' -l dataset -s d -d 'Layout of --data-path (see the README\'s table)' -x -a 'mvtec btad mvtec3d folder'
complete -c ed -n '__fish_seen_subcommand_from train' -l category -s c -d 'Only this category (repeatable)' -x
complete -c ed -n '__fish_seen_subcommand_from train' -l store -s s -d 'Feature store directory (HDF5 files)' -x -a '(__fish_complete_directories)'
complete -c ed -n '__fish_seen_subcommand_from train' -l out -s o -d 'Run folder: checkpoints/<category>.pt, run.json, metrics' -x -a '(__fish_complete_directories)'
complete -c ed -n '__fish_seen_subcommand_from train' -l backbone -s b -d 'timm model name with features_only support' -x
complete -c ed -n '__fish_seen_subcommand_from train' -l weights -d 'Backbone weights file (offline use)' -r -F
complete -c ed -n '__fish_seen_subcommand_from train' -l random-init -d 'Untrained backbone: for tests and timing only (recorded)'
complete -c ed -n '__fish_seen_subcommand_from train' -l image-size -d 'Input size S in pixels: images become S x S' -x
complete -c ed -n '__fish_seen_subcommand_from train' -l levels -d 'timm feature indices, comma separated (2,3 = strides 8 and 16)' -x
complete -c ed -n '__fish_seen_subcommand_from train' -l normal-name -d 'Name of the normal folder for --dataset folder' -x
complete -c ed -n '__fish_seen_subcommand_from train' -l test-fraction -d '--dataset folder without test/: this share of the normal images becomes the (normal-only) test split, picked by the seed' -x
complete -c ed -n '__fish_seen_subcommand_from train' -l epochs -d 'Training epochs per category' -x
complete -c ed -n '__fish_seen_subcommand_from train' -l batch-size -d 'Images per training step' -x
complete -c ed -n '__fish_seen_subcommand_from train' -l lr -d 'Adam learning rate' -x
complete -c ed -n '__fish_seen_subcommand_from train' -l seed -d 'Random seed (reset per category, as the reference)' -x
complete -c ed -n '__fish_seen_subcommand_from train' -l arch -d 'ed, or fod (subtraction fusion, plain MLP, fixed temperature)' -x -a 'ed fod'
complete -c ed -n '__fish_seen_subcommand_from train' -l intra -l no-intra -d 'Intra-image (self-attention) branch'
complete -c ed -n '__fish_seen_subcommand_from train' -l inter -l no-inter -d 'Inter-image (prototype cross-attention) branch'
complete -c ed -n '__fish_seen_subcommand_from train' -l layers -d 'Encoder layers per level' -x
complete -c ed -n '__fish_seen_subcommand_from train' -l heads -d 'Attention heads' -x
complete -c ed -n '__fish_seen_subcommand_from train' -l d-model -d 'Model width per level, comma separated, or auto (C/2 rounded up to 32, >= 64)' -x
complete -c ed -n '__fish_seen_subcommand_from train' -l attn-out-proj -d 'Apply the attention output projection (the reference discards it)'
complete -c ed -n '__fish_seen_subcommand_from train' -l device -d 'Where to compute; auto: cuda, then mps, then cpu' -x -a 'auto cpu cuda mps'
complete -c ed -n '__fish_seen_subcommand_from train' -l precision -d 'Autocast precision of the matrix products: fp16 needs a GPU, bf16 a GPU or a CPU with bf16 units (AVX512-BF16 or AMX)' -x -a 'fp32 bf16 fp16'
complete -c ed -n '__fish_seen_subcommand_from train' -l eval-every -d 'Evaluate on the test split every N epochs (0: never); with --select validation: validate every N epochs (default 1)' -x
complete -c ed -n '__fish_seen_subcommand_from train' -l select -d 'Which epoch\'s weights: last (honest), validation (best on held-out normal images with synthetic defects: no test labels), or the best by a TEST metric (best-image, best-pixel: test-selected, needs --eval-every)' -x -a 'last best-image best-pixel validation'
complete -c ed -n '__fish_seen_subcommand_from train' -l val-fraction -d '--select validation: share of the normal train images held out for validation' -x
complete -c ed -n '__fish_seen_subcommand_from train' -l calib-fraction -d 'Share of normal train images held out for the threshold' -x
complete -c ed -n '__fish_seen_subcommand_from train' -l strategy -d 'Under torchrun: categories (one per rank) or ddp (one category data-parallel)' -x -a 'auto categories ddp'
complete -c ed -n '__fish_seen_subcommand_from train' -l jobs -s j -d 'Categories trained side by side in worker processes' -x
complete -c ed -n '__fish_seen_subcommand_from train' -l optimizer -d 'reference (one Adam, zero-filled grads: torch 1.13\'s extra momentum step) or per-level' -x -a 'reference per-level'
complete -c ed -n '__fish_seen_subcommand_from train' -l lr-schedule -d 'constant (the reference) or cosine (per batch, to 0)' -x -a 'constant cosine'
complete -c ed -n '__fish_seen_subcommand_from train' -l warmup-epochs -d 'Linear learning-rate warm-up over this many epochs' -x
complete -c ed -n '__fish_seen_subcommand_from train' -l average -d 'Weights kept: none (the last step\'s), ema (moving average after every step) or swa (equal average of the epochs from --swa-start); the average is what is evaluated, selected and saved' -x -a 'none ema swa'
complete -c ed -n '__fish_seen_subcommand_from train' -l ema-decay -d '--average ema: decay per step' -x
complete -c ed -n '__fish_seen_subcommand_from train' -l swa-start -d '--average swa: first epoch in the average (0: the middle epoch)' -x
complete -c ed -n '__fish_seen_subcommand_from train' -l score -d 'Per-token anomaly score: rec-kl (reconstruction error x the attention-vs-prior KL; the default, steadier than the paper\'s), ed (the paper\'s: error x (max(s) - s), s a per-image softmax of the KL) or rec (reconstruction error); recorded in the checkpoint' -x -a 'ed rec rec-kl'
complete -c ed -n '__fish_seen_subcommand_from train' -l resume -d 'Continue from the last completed epoch'
complete -c ed -n '__fish_seen_subcommand_from train' -l overwrite -d 'Replace the checkpoints of an existing run folder and remove its stale metrics, predictions and maps'
complete -c ed -n '__fish_seen_subcommand_from train' -l num-workers -d 'DataLoader worker processes for image decoding' -x
complete -c ed -n '__fish_seen_subcommand_from train' -l json -d 'Machine-readable JSON on stdout (nothing else)'
complete -c ed -n '__fish_seen_subcommand_from train' -l quiet -s q -d 'No progress on stderr'
complete -c ed -n '__fish_seen_subcommand_from train' -l help -s h -d 'Show this message and exit'
complete -c ed -f -n __fish_use_subcommand -a eval -d 'Score the labelled test split; per-category metrics and their mean; writes metrics.json and metrics.csv'
complete -c ed -n '__fish_seen_subcommand_from eval' -l run -s r -d 'Run folder written by `ed train --out`' -x -a '(__fish_complete_directories)'
complete -c ed -n '__fish_seen_subcommand_from eval' -l checkpoint -d 'One checkpoint file instead of a run' -r -F
complete -c ed -n '__fish_seen_subcommand_from eval' -l data-path -s p -d 'Dataset root: one folder per category' -x -a '(__fish_complete_directories)'
complete -c ed -n '__fish_seen_subcommand_from eval' -l dataset -s d -d 'Layout of --data-path (default: the checkpoint\'s)' -x -a 'mvtec btad mvtec3d folder'
complete -c ed -n '__fish_seen_subcommand_from eval' -l category -s c -d 'Only this category (repeatable)' -x
complete -c ed -n '__fish_seen_subcommand_from eval' -l store -s s -d 'Feature store (default: the run\'s)' -x -a '(__fish_complete_directories)'
complete -c ed -n '__fish_seen_subcommand_from eval' -l reducer -d 'Image score from the smoothed map: its max, mean, or mean of the top share R (0 < R <= 1)' -x -a 'max mean'
complete -c ed -n '__fish_seen_subcommand_from eval' -l score -d 'Per-token score (ed, rec, rec-kl); default: the one each checkpoint was calibrated with' -x -a 'ed rec rec-kl'
complete -c ed -n '__fish_seen_subcommand_from eval' -l pixel-map -d 'Map for pixel metrics: raw (unsmoothed, as the reference) or smoothed' -x -a 'raw smoothed'
complete -c ed -n '__fish_seen_subcommand_from eval' -l device -d 'Where to compute; auto: cuda, then mps, then cpu' -x -a 'auto cpu cuda mps'
complete -c ed -n '__fish_seen_subcommand_from eval' -l precision -d 'Autocast precision of the matrix products: fp16 needs a GPU, bf16 a GPU or a CPU with bf16 units (AVX512-BF16 or AMX)' -x -a 'fp32 bf16 fp16'
complete -c ed -n '__fish_seen_subcommand_from eval' -l batch-size -d 'Images per batch' -x
complete -c ed -n '__fish_seen_subcommand_from eval' -l save-maps -d 'Write raw maps (.npy) and heat-map PNGs per test image'
complete -c ed -n '__fish_seen_subcommand_from eval' -l num-workers -d 'DataLoader worker processes for image decoding' -x
complete -c ed -n '__fish_seen_subcommand_from eval' -l json -d 'Machine-readable JSON on stdout (nothing else)'
complete -c ed -n '__fish_seen_subcommand_from eval' -l quiet -s q -d 'No progress on stderr'
complete -c ed -n '__fish_seen_subcommand_from eval' -l help -s h -d 'Show this message and exit'
complete -c ed -f -n __fish_use_subcommand -a infer -d 'Score any images with a checkpoint or an exported .onnx model: predictions.csv/.jsonl, heat maps, masks, raw maps'
complete -c ed -n '__fish_seen_subcommand_from infer' -l out -s o -d 'Output folder for predictions and heat maps' -x -a '(__fish_complete_directories)'
complete -c ed -n '__fish_seen_subcommand_from infer' -l batch-size -d 'Images per batch' -x
complete -c ed -n '__fish_seen_subcommand_from infer' -l device -d 'Where to compute; auto: cuda, then mps, then cpu' -x -a 'auto cpu cuda mps'
complete -c ed -n '__fish_seen_subcommand_from infer' -l precision -d 'Autocast precision of the matrix products: fp16 needs a GPU, bf16 a GPU or a CPU with bf16 units (AVX512-BF16 or AMX)' -x -a 'fp32 bf16 fp16'
complete -c ed -n '__fish_seen_subcommand_from infer' -l recursive -s R -d 'Descend into sub-folders'
complete -c ed -n '__fish_seen_subcommand_from infer' -l max-pixels -d 'Larger images are failed rows, decided from the header before decoding' -x
complete -c ed -n '__fish_seen_subcommand_from infer' -l shard -d 'Score the I-th of N contiguous parts of the inputs (0-based); the last part to finish merges' -x
complete -c ed -n '__fish_seen_subcommand_from infer' -l json -d 'Machine-readable JSON on stdout (nothing else)'
complete -c ed -n '__fish_seen_subcommand_from infer' -l csv -d 'CSV rows on stdout'
complete -c ed -n '__fish_seen_subcommand_from infer' -l save-heatmaps -d 'Heat-map panels and masks of which images; auto: all up to 1000 inputs, else anomalous' -x -a 'auto all anomalous none'
complete -c ed -n '__fish_seen_subcommand_from infer' -l no-save-heatmaps -d 'The same as --save-heatmaps none'
complete -c ed -n '__fish_seen_subcommand_from infer' -l save-raw-maps -d 'Raw anomaly maps (.npy) of every image'
complete -c ed -n '__fish_seen_subcommand_from infer' -l resume -d 'Score only the images without a row in --out (same model)'
complete -c ed -n '__fish_seen_subcommand_from infer' -l overwrite -d 'Replace the predictions and heat maps in --out'
complete -c ed -n '__fish_seen_subcommand_from infer' -l threshold -d 'Override the checkpoint\'s calibrated threshold (raw score)' -x
complete -c ed -n '__fish_seen_subcommand_from infer' -l fail-on-anomaly -d 'Exit 3 when any image is anomalous'
complete -c ed -n '__fish_seen_subcommand_from infer' -l engine -d 'ray: score in a Ray Data pipeline (pip install \'edcli[ray]\')' -x -a 'torch ray'
complete -c ed -n '__fish_seen_subcommand_from infer' -l num-workers -d 'DataLoader worker processes for image decoding' -x
complete -c ed -n '__fish_seen_subcommand_from infer' -l quiet -s q -d 'No progress on stderr'
complete -c ed -n '__fish_seen_subcommand_from infer' -l help -s h -d 'Show this message and exit'
complete -c ed -f -n __fish_use_subcommand -a export -d 'Export a checkpoint as one ONNX graph (images -> raw map, smoothed map, score) with its calibration'
complete -c ed -n '__fish_seen_subcommand_from export' -l out -s o -d 'The .onnx file' -r -F
complete -c ed -n '__fish_seen_subcommand_from export' -l opset -d 'ONNX opset version (13..20)' -x
complete -c ed -n '__fish_seen_subcommand_from export' -l batch -d 'Batch size of the graph: a number, or dynamic' -x -a 'dynamic'
complete -c ed -n '__fish_seen_subcommand_from export' -l json -d 'Machine-readable JSON on stdout (nothing else)'
complete -c ed -n '__fish_seen_subcommand_from export' -l quiet -s q -d 'No progress on stderr'
complete -c ed -n '__fish_seen_subcommand_from export' -l help -s h -d 'Show this message and exit'
complete -c ed -f -n __fish_use_subcommand -a report -d 'One self-contained HTML page of an evaluated run: protocol, metrics, curves, histograms, losses, worst images'
complete -c ed -n '__fish_seen_subcommand_from report' -l out -s o -d 'HTML file to write' -r -F
complete -c ed -n '__fish_seen_subcommand_from report' -l json -d 'Machine-readable JSON on stdout (nothing else)'
complete -c ed -n '__fish_seen_subcommand_from report' -l quiet -s q -d 'No progress on stderr'
complete -c ed -n '__fish_seen_subcommand_from report' -l help -s h -d 'Show this message and exit'
complete -c ed -f -n __fish_use_subcommand -a demo -d 'Make a small MVTec-layout dataset from real textures with injected defects and run the whole pipeline on it'
complete -c ed -n '__fish_seen_subcommand_from demo' -l out -s o -d 'Demo folder (dataset, store, run, predictions)' -x -a '(__fish_complete_directories)'
complete -c ed -n '__fish_seen_subcommand_from demo' -l category -s c -d 'Only this category (repeatable)' -x
complete -c ed -n '__fish_seen_subcommand_from demo' -l quick -d 'A sub-minute version (fewer images and epochs)'
complete -c ed -n '__fish_seen_subcommand_from demo' -l seed -d 'Training seed (the dataset stays the same)' -x
complete -c ed -n '__fish_seen_subcommand_from demo' -l device -d 'Where to compute; auto: cuda, then mps, then cpu' -x -a 'auto cpu cuda mps'
complete -c ed -n '__fish_seen_subcommand_from demo' -l quiet -s q -d 'No progress on stderr'
complete -c ed -n '__fish_seen_subcommand_from demo' -l help -s h -d 'Show this message and exit'
