// Everything a training program needs from accelerate-cpp.
#pragma once

#include <acc/accelerator.hpp>
#include <acc/comm/gloo.hpp>
#include <acc/comm/local.hpp>
#include <acc/comm/nccl.hpp>
#include <acc/config/config.hpp>
#include <acc/config/environment.hpp>
#include <acc/config/run.hpp>
#include <acc/data/collate.hpp>
#include <acc/data/dataloader.hpp>
#include <acc/data/sampler.hpp>
#include <acc/error.hpp>
#include <acc/fsdp/sharding.hpp>
#include <acc/fsdp/unit.hpp>
#include <acc/ops/collectives.hpp>
#include <acc/optim/adamw.hpp>
#include <acc/precision/autocast.hpp>
#include <acc/precision/bf16.hpp>
#include <acc/precision/fp16.hpp>
#include <acc/precision/fp32.hpp>
#include <acc/precision/grad_scaler.hpp>
#include <acc/precision/true_half.hpp>
#include <acc/strategy/ddp.hpp>
#include <acc/strategy/fsdp.hpp>
#include <acc/strategy/single.hpp>
#include <acc/version.hpp>
