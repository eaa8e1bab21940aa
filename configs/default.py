"""Every field flaxcls reads, with its default. Other configs are small deltas on this one.

Train with any config and override any field on the command line:
  python run.py --config configs/default.py --config.num_epochs=1 --workdir runs/try
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0  # one seed drives init, data order, augmentation and dropout

    config.model = ml_collections.ConfigDict()
    config.model.name = "seed_cnn"  # a name from flaxcls.models.MODELS
    config.model.dropout_rate = 0.0  # before the classifier (inside blocks for WideResNet)
    config.model.dtype = "float32"  # compute dtype: float32 | bfloat16 (params stay float32)
    # fast_cnn*: set the stem's kernel by patch whitening of training images (freeze it with
    # optimizer.freeze="^stem/"); needs stem_width = 2 * k * k * channels.
    config.model.whiten_stem = False

    config.data = ml_collections.ConfigDict()
    config.data.dataset = "fashion_mnist"  # a name from flaxcls.data.DATASETS, custom or folder
    config.data.source = "auto"  # auto | tfds | idx | npz; auto prefers installed IDX files
    config.data.path = ""  # IDX folder or .npz file (idx/npz sources); the root for "folder"
    config.data.data_dir = ""  # tfds data_dir; empty means tfds's default
    config.data.download = False  # let tfds download and prepare a missing dataset
    config.data.validation_fraction = 0.2  # the last 20% of train is held out, as in Keras
    config.data.test_fraction = 0.1  # held out as test when an .npz or a folder has no test split
    config.data.num_classes = 0  # for dataset="custom": 0 means max label + 1
    # dataset="folder": class sub-folders (or train/ val/ test/ of them), resized to image_size
    config.data.channels = 0  # 1 or 3; 0: 1 when every image is grayscale
    config.data.split_seed = 0  # the stratified split of a folder without split sub-folders
    config.data.skip_corrupt = False  # skip unreadable images with a warning (else an error)
    config.data.augment = "none"  # none | flip | crop | crop_flip; streaming: inception_crop_flip
    config.data.crop_padding = 4  # pixels of zero padding for the random crop
    config.data.image_size = 224  # streaming and folder datasets: the side images are sized to
    config.data.eval_resize = 256  # streaming datasets: shorter side before the centre crop
    config.data.shuffle_buffer = 10_000  # streaming datasets: tf.data shuffle buffer
    # In-memory datasets: hold the uint8 training split on every device; each batch is gathered,
    # augmented and normalised inside the compiled step (the same batches as the host path).
    config.data.on_device = False
    # Inside the training step, on normalised images, after the crop/flip above:
    config.data.randaugment_ops = 0  # RandAugment operations per image; 0 disables it
    config.data.randaugment_magnitude = 9.0  # 0-10 (timm's rand-m9-n2 = 9 and 2 ops)
    config.data.erasing_prob = 0.0  # random erasing (cutout with noise) per image
    config.data.mixup_alpha = 0.0  # Beta(alpha, alpha) mixing of images and labels; 0 disables
    config.data.cutmix_alpha = 0.0  # with both alphas set, each batch picks one at 50%
    config.data.mix_prob = 1.0  # the share of batches mixed

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
    config.steps_per_dispatch = 1

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adam"  # sgd | adam | adamw
    config.optimizer.learning_rate = 1e-3  # peak learning rate
    config.optimizer.momentum = 0.9  # sgd
    config.optimizer.nesterov = False  # sgd
    config.optimizer.b1 = 0.9  # adam, adamw
    config.optimizer.b2 = 0.999  # adam, adamw
    config.optimizer.eps = 1e-8  # adam, adamw
    config.optimizer.weight_decay = 0.0  # kernels only; L2 for sgd/adam, decoupled for adamw
    config.optimizer.grad_clip_norm = 0.0  # > 0 clips the global gradient norm
    config.optimizer.freeze = ""  # regex over "module/param" paths kept fixed, e.g. "^stem/"
    # Transfer learning: "^(?!head/)" freezes everything but the classifier (a feature
    # extractor); backbone_lr_factor < 1 fine-tunes the backbone at a lower learning rate.
    config.optimizer.backbone_lr_factor = 1.0

    config.schedule = ml_collections.ConfigDict()
    config.schedule.name = "constant"  # constant | step | cosine | warmup_cosine
    config.schedule.warmup_epochs = 0.0  # warmup_cosine
    config.schedule.decay_epochs = ()  # step: epochs at which the rate is multiplied...
    config.schedule.decay_factor = 0.1  # ...by this factor
    config.schedule.end_factor = 0.0  # cosine schedules end at learning_rate * end_factor

    config.label_smoothing = 0.0
    config.class_weights = "none"  # none | balanced: weigh each class's loss by 1 / its frequency
    config.init_from = ""  # a run directory: start from its best checkpoint's backbone
    config.init_head = False  # also copy its classifier (same classes only)
    # Train with BatchNorm in inference mode: running statistics used and kept as they are
    # (and dropout off), as a frozen feature extractor needs.
    config.frozen_batch_stats = False
    config.flip_tta = False  # evaluate on the mean logits of each image and its mirror
    # > 0: keep a moving average of the weights (decay per step, e.g. 0.999) and evaluate,
    # checkpoint-select and export with it.
    config.ema_decay = 0.0

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
    return config
