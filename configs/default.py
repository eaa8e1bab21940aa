"""Every field flaxcls reads, with its default. Other configs are small deltas on this one.

Train with any config and override any field on the command line:
  python run.py --config configs/default.py --config.num_epochs=1 --workdir runs/try
"""

import ml_collections

from flaxcls.data.api import default_data_config


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0  # one seed drives init, data order, augmentation and dropout

    config.model = ml_collections.ConfigDict()
    config.model.name = "seed_cnn"  # a name from flaxcls.models.MODELS
    config.model.dropout_rate = 0.0  # before the classifier (inside blocks for WideResNet)
    # compute dtype: float32 | bfloat16 | auto (bfloat16 on GPUs and TPUs); params stay float32
    config.model.dtype = "float32"
    # fast_cnn*: set the stem's kernel by patch whitening of training images (freeze it with
    # optimizer.freeze="^stem/"); needs stem_width = 2 * k * k * channels.
    config.model.whiten_stem = False
    # False: airbench94's whitening (the patches' second moment, not their covariance)
    config.model.whiten_centered = True

    # Which images and how they are read, augmented and batched: every field with its comment
    # is in flaxcls/data/api.py (default_data_config), which the data API shares.
    config.data = default_data_config()

    config.mesh = ml_collections.ConfigDict()
    config.mesh.params = "replicated"  # replicated | fsdp: shard large leaves over the devices
    config.mesh.fsdp_min_size = 2**16  # fsdp: leaves with fewer elements stay replicated

    config.batch_size = 64  # global: split over all devices and processes
    config.eval_batch_size = 500  # global; the last batch is padded and masked
    config.num_epochs = 10.0
    config.num_train_steps = -1  # > 0 overrides num_epochs
    # Optimiser steps per compiled call (Keras's steps_per_execution): K > 1 runs K steps in one
    # lax.scan with no host round trip between them; logging, validation, checkpoints and
    # SIGTERM then act at multiples of K (and at the last step). The parameters are the same.
    config.steps_per_dispatch = 0  # 0: by platform, 1 on CPUs and 32 on GPUs and TPUs

    config.optimizer = ml_collections.ConfigDict()
    # sgd | adam | adamw | sgd_decoupled (airbench94's SGD: learning_rate and weight_decay per
    # 1,024 examples, independent of each other and of the momentum; see flaxcls/core/optim.py)
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3  # peak learning rate
    config.optimizer.momentum = 0.9  # sgd
    config.optimizer.nesterov = False  # sgd
    config.optimizer.b1 = 0.9  # adam, adamw
    config.optimizer.b2 = 0.999  # adam, adamw
    config.optimizer.eps = 1e-8  # adam, adamw
    config.optimizer.weight_decay = 0.0  # kernels only; L2 for sgd/adam, decoupled for adamw
    config.optimizer.grad_clip_norm = 0.0  # > 0 clips the global gradient norm
    config.optimizer.freeze = ""  # regex over "module/param" paths kept fixed, e.g. "^stem/"
    config.optimizer.freeze_after = ""  # regex: these train for freeze_after_epochs, then stop
    config.optimizer.freeze_after_epochs = 0.0
    config.optimizer.norm_bias_lr_factor = 1.0  # sgd_decoupled: BatchNorm biases' rate factor
    # Transfer learning: "^(?!head/)" freezes everything but the classifier (a feature
    # extractor); backbone_lr_factor < 1 fine-tunes the backbone at a lower learning rate.
    config.optimizer.backbone_lr_factor = 1.0
    # > 0: sharpness-aware minimisation, the gradient taken at weights moved this far (L2)
    # along the normalised gradient; costs a second forward and backward pass per step.
    config.optimizer.sam_rho = 0.0

    config.schedule = ml_collections.ConfigDict()
    config.schedule.name = "constant"  # constant | step | cosine | warmup_cosine | triangle
    config.schedule.warmup_epochs = 0.0  # warmup_cosine
    config.schedule.decay_epochs = ()  # step: epochs at which the rate is multiplied...
    config.schedule.decay_factor = 0.1  # ...by this factor
    config.schedule.end_factor = 0.0  # cosine, triangle: end at learning_rate * end_factor
    config.schedule.start_factor = 0.0  # triangle: start at learning_rate * start_factor...
    config.schedule.peak_fraction = 0.0  # ...and peak at this fraction of training

    config.label_smoothing = 0.0
    config.class_weights = "none"  # none | balanced: weigh each class's loss by 1 / its frequency
    config.init_from = ""  # a run directory: start from its best checkpoint's backbone
    config.init_head = False  # also copy its classifier (same classes only)
    # Train with BatchNorm in inference mode: running statistics used and kept as they are
    # (and dropout off), as a frozen feature extractor needs.
    config.frozen_batch_stats = False
    config.flip_tta = False  # evaluate on the mean logits of each image and its mirror
    # > 0: also average over the image shifted by this many pixels (reflect padding) up-left
    # and down-right, weighing the unshifted view 1/2 (airbench's TTA level 2 with flip_tta)
    config.translate_tta = 0
    # > 0: keep a moving average of the weights (decay per step, e.g. 0.999) and evaluate,
    # checkpoint-select and export with it.
    config.ema_decay = 0.0
    # every > 0: lookahead (flaxcls/core/lookahead.py): every `every` steps the slow weights move
    # towards the weights with decay**every * (step / total)**power, and training resumes
    # from them (airbench94: 5, 0.95, 3)
    config.lookahead = ml_collections.ConfigDict()
    config.lookahead.every = 0
    config.lookahead.decay = 0.95
    config.lookahead.power = 3.0

    config.eval_every_epochs = 1.0  # validation (and a checkpoint) this often
    config.checkpoint_every_steps = 0  # > 0 adds checkpoints between validations
    config.keep_checkpoints = 3  # the latest few are kept, plus the best by best_metric
    config.nonfinite = (
        "stop"  # stop | skip: a NaN/Inf loss or gradient stops, or its update is skipped
    )
    config.max_consecutive_skips = 10  # skip: stop after this many non-finite steps in a row
    # > 0: stop where a step's training loss exceeds this many times its running level (or the
    # chance loss log(num_classes), whichever is higher); 0 turns the rail off.
    config.divergence_factor = 100.0
    config.on_save_error = "stop"  # stop | continue: a failed save (disk full) stops or warns
    config.best_metric = "val_accuracy"  # val_accuracy | val_top5_accuracy | val_loss
    config.early_stopping_patience = 0  # > 0: stop after this many validations without gain
    config.log_every_steps = 100
    # > 0: a profiler trace of this many steps after the first call (compilation) in
    # WORKDIR/profile, for TensorBoard's profile tab or Perfetto; the loop's waits are named.
    config.profile_steps = 0
    config.progress_bar = True
    config.compilation_cache_dir = "~/.cache/flaxcls/jax"  # empty disables JAX's disk cache
    # resuming a checkpointed workdir with a config that differs (flaxcls/rundir/config_change.py)
    # is refused; True goes on and records the change in WORKDIR/config_history.jsonl
    config.allow_config_change = False
    return config
