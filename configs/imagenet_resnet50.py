"""ResNet-50 v1.5 on ImageNet (the standard recipe of Goyal et al. 2017): SGD Nesterov 0.9,
lr 0.1 x batch/256, 5 warmup epochs then cosine, weight decay 1e-4, label smoothing 0.1,
inception crop + flip, 100 epochs, bfloat16 compute.

  python run.py --config configs/imagenet_resnet50.py --workdir runs/imagenet_r50 \
    --config.data.data_dir=<data_dir>

Needs tfds's `imagenet2012` prepared from the manually downloaded archives (BUILD.md). The
learning rate below is for the global batch 1024; keep lr = 0.1 x batch / 256 when changing it
(256 per GPU on one 8-GPU node, 256 per chip on a TPU slice):

  # one host with 8 GPUs (one process drives them all)
  python run.py --config configs/imagenet_resnet50.py --workdir /data/runs/r50 \
    --config.data.data_dir=/data/tensorflow_datasets \
    --config.batch_size=2048 --config.optimizer.learning_rate=0.8
  # a TPU v4-32 slice (4 hosts, 16 chips): the same command on every worker
  gcloud compute tpus tpu-vm ssh $TPU_NAME --zone=$ZONE --worker=all --command="
    cd flaxcls && . .venv/bin/activate &&
    python run.py --config configs/imagenet_resnet50.py --workdir /mnt/shared/r50 \
      --distributed --config.data.data_dir=gs://$BUCKET/tensorflow_datasets \
      --config.batch_size=4096 --config.optimizer.learning_rate=1.6"

Expected accuracy: 76%+ top-1 on the 50,000 validation images. Goyal et al. 2017 report
76.3% (23.7% error) for this network at 90 epochs, the same at every batch from 256 to 8k
with this lr scaling and warmup; flax's ImageNet example reaches 76.3% in 90 epochs. He et
al. 2019 ("Bag of Tricks") measure a few tenths more each for cosine decay and label smoothing
(ResNet-50-D, 120 epochs). Not yet run to the end with flaxcls.

Expected time: 1,268,356 training images (99%; 1% is the minival) x 100 epochs. At the
6,310 images/s flaxcls measured for this step on one H200 (batch 256, 224px, bf16;
benchmarks/results/resnet50_vs_pytorch.json) that is 5.6 GPU-hours: 5.6 hours on one GPU,
42 minutes on 8, assuming linear scaling and an input pipeline that keeps up (JPEG decoding
and inception crops at >= 450 images/s per core: 16 cores per GPU).
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.model.name = "resnet50"
    config.model.dtype = "bfloat16"
    config.data.dataset = "imagenet2012"
    config.data.augment = "inception_crop_flip"
    config.data.validation_fraction = 0.01  # a minival of 12,811 training images
    config.data.image_size = 224
    config.data.eval_resize = 256
    config.batch_size = 1024
    config.eval_batch_size = 1000
    config.num_epochs = 100.0
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.4  # 0.1 x 1024 / 256
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = True
    config.optimizer.weight_decay = 1e-4
    config.schedule.name = "warmup_cosine"
    config.schedule.warmup_epochs = 5.0
    config.label_smoothing = 0.1
    config.log_every_steps = 500
    return config
