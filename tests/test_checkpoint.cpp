#include "error_of.hpp"
#include "pch.hpp"  // first: libtorch, then doctest
#include "resume_training.hpp"
#include "scaled_fp32.hpp"
#include "temp_dir.hpp"

#include <acc/acc.hpp>
#include <acc/checkpoint/safetensors.hpp>
#include <acc/detail/crc32c.hpp>

#include <nlohmann/json.hpp>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace fs = std::filesystem;

namespace {

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// As acc_state.json records it: 8 hexadecimal digits.
std::string crc32c_text(const std::string& bytes) {
  char text[9];
  std::snprintf(text, sizeof text, "%08x", acc::detail::crc32c(bytes));
  return text;
}

// Changes one byte of a file (the last: in a safetensors file, tensor data), keeping its size.
void flip_last_byte(const fs::path& file) {
  auto bytes = read_text(file);
  bytes.back() = static_cast<char>(bytes.back() ^ 0x5a);
  write_text(file, bytes);
}

// The id of a process that has ended (a child that exited at once).
pid_t ended_process() {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  ::waitpid(pid, nullptr, 0);
  return pid;
}

void fill_weights(resume::Net& net, double value) {
  at::NoGradGuard no_grad;
  for (auto& p : net->parameters()) p.fill_(value);
}
bool weights_are(resume::Net& net, double value) {
  for (const auto& p : net->parameters())
    if (!p.eq(value).all().item<bool>()) return false;
  return true;
}

acc::AcceleratorOptions cpu_options() {
  return acc::AcceleratorOptions().environment(acc::ProcessEnvironment{}).cpu(true);
}

// 20 batches straight vs 7, a checkpoint, and 13 more in a new Accelerator: the same losses (and
// loss scales and learning rates) batch for batch, and the same parameters at the end.
template <class Precision, class Sampler>
void check_resume(const acc::AcceleratorOptions& options, const resume::Recipe& recipe) {
  using Strategy = acc::Single;
  TempDir dir;
  const auto straight = resume::train<Strategy, Precision, Sampler>(options, recipe, 0, 20);
  resume::train<Strategy, Precision, Sampler>(options, recipe, 0, 7, {}, dir.path / "ckpt");
  const auto resumed = resume::train<Strategy, Precision, Sampler>(options, recipe, 7, 13, dir.path / "ckpt");
  REQUIRE(resumed.losses.size() == 13);
  for (std::size_t i = 0; i < 13; ++i) {
    CAPTURE(i);
    CHECK(resumed.losses[i] == straight.losses[7 + i]);
    CHECK(resumed.lrs[i] == straight.lrs[7 + i]);
    if (!straight.scales.empty()) CHECK(resumed.scales[i] == straight.scales[7 + i]);
  }
  REQUIRE(resumed.parameters.size() == straight.parameters.size());
  for (std::size_t i = 0; i < straight.parameters.size(); ++i)
    CHECK(at::equal(resumed.parameters[i], straight.parameters[i]));
}

// What 2 processes that had `batches` batches each of the loader saved in `dir` would have written.
void as_if_saved_by_two(const fs::path& dir, int64_t batches) {
  auto metadata = nlohmann::json::parse(read_text(dir / "acc_state.json"));
  metadata["world_size"] = 2;
  metadata["random_states"].push_back("random_states_1.bin");
  if (!metadata["gradients"].empty()) metadata["gradients"].push_back("gradients_1.safetensors");
  for (auto& loader : metadata["data_loaders"]) {
    loader["positions"][0]["batches"] = batches;
    loader["positions"].push_back(loader["positions"][0]);
  }
  write_text(dir / "acc_state.json", metadata.dump());
}

}  // namespace

TEST_SUITE("checkpoint") {
  TEST_CASE("resume: Single, fp32, sequential sampler: 7 + 13 batches equal 20 bit for bit") {
    check_resume<acc::FP32, acc::Sequential>(cpu_options(), {});
  }

  TEST_CASE("resume: shuffled sampler, mid-epoch (batch 7 of 10)") {
    check_resume<acc::FP32, acc::Shuffled>(cpu_options(), {});
  }

  TEST_CASE("resume: an LR scheduler continues its schedule") {
    resume::Recipe recipe;
    recipe.scheduler_step_size = 3;
    check_resume<acc::FP32, acc::Shuffled>(cpu_options(), recipe);
    const auto run = resume::train<acc::Single, acc::FP32, acc::Shuffled>(cpu_options(), recipe, 0, 20);
    CHECK(run.lrs.back() == doctest::Approx(1e-2 * std::pow(0.5, 6)));  // it really changed
  }

  TEST_CASE("a checkpoint of 2 processes resumes on 1: its loader goes on after the batches both had") {
    TempDir dir;
    std::vector<at::Tensor> epoch;  // the 10 batches of epoch 0 on one process
    {
      acc::Accelerator<acc::Single, acc::FP32, acc::Shuffled> accelerator(cpu_options());
      auto loader = accelerator.prepare(acc::DataLoader(resume::Blobs{}, acc::DataLoaderOptions(8).seed(3)));
      for (auto& batch : loader) {
        epoch.push_back(batch.target);
        if (epoch.size() == 3) accelerator.save_state(dir.path);
      }
    }
    as_if_saved_by_two(dir.path, 3);  // 3 batches each: the first 6 of the epoch's order
    acc::Accelerator<acc::Single, acc::FP32, acc::Shuffled> accelerator(cpu_options());
    auto loader = accelerator.prepare(acc::DataLoader(resume::Blobs{}, acc::DataLoaderOptions(8).seed(99)));
    accelerator.load_state(dir.path);
    std::vector<at::Tensor> got;
    for (auto& batch : loader) got.push_back(batch.target);
    REQUIRE(got.size() == 4);
    for (std::size_t i = 0; i < got.size(); ++i) CHECK(at::equal(got[i], epoch[6 + i]));
  }

  TEST_CASE("a checkpoint of 2 processes saved in the middle of an accumulation cycle does not load on 1") {
    TempDir dir;
    resume::train<acc::Single, acc::FP32, acc::Shuffled>(cpu_options().gradient_accumulation_steps(3), {}, 0, 7, {},
                                                         dir.path);
    as_if_saved_by_two(dir.path, 7);
    acc::Accelerator<acc::Single, acc::FP32, acc::Shuffled> accelerator(cpu_options().gradient_accumulation_steps(3));
    const auto error = error_of([&] { accelerator.load_state(dir.path); });
    CHECK(contains(error, "saved by 2 processes, and this job has 1 in the middle of a gradient accumulation cycle"));
    CHECK(contains(error, "resume with 2 processes, or from a checkpoint saved after an optimizer step"));
  }

  TEST_CASE("resume: gradient accumulation, saved in the middle of a cycle (micro-step 7 of 3-step cycles)") {
    const auto options = cpu_options().gradient_accumulation_steps(3);
    check_resume<acc::FP32, acc::Shuffled>(options, {});
    TempDir dir;
    resume::train<acc::Single, acc::FP32, acc::Shuffled>(options, {}, 0, 7, {}, dir.path);
    CHECK(fs::exists(dir.path / "gradients_0.safetensors"));  // the accumulated gradients
    const auto metadata = nlohmann::json::parse(read_text(dir.path / "acc_state.json"));
    CHECK(metadata["step"] == 7);
  }

  TEST_CASE("resume: loss scaling with an overflow before the save (scale and growth tracker restored)") {
    const auto options = cpu_options().grad_scaler(acc::GradScalerOptions().growth_interval(4));
    resume::Recipe recipe;
    recipe.overflow_at = 4;
    check_resume<ScaledFP32, acc::Shuffled>(options, recipe);
    const auto run = resume::train<acc::Single, ScaledFP32, acc::Shuffled>(options, recipe, 0, 20);
    // grows after batch 3, backs off at 4, and grows after every 4 clean batches from 5 on
    CHECK(run.scales[3] == 131072.0);
    CHECK(run.scales[4] == 65536.0);
    CHECK(run.scales[6] == 65536.0);  // saved here with the growth tracker at 2
    CHECK(run.scales[8] == 131072.0);
  }

  TEST_CASE("save_state writes Accelerate's files, and model.safetensors holds the model's tensors") {
    TempDir dir;
    acc::Accelerator<acc::Single, ScaledFP32> accelerator(cpu_options());
    resume::Net net;
    torch::optim::AdamW opt(net->parameters());
    torch::optim::StepLR sched(opt, 2);
    auto [model, optimizer, scheduler, loader] =
        accelerator.prepare(net, opt, sched, acc::DataLoader(resume::Blobs{}, 8));
    auto it = loader.begin();
    ++it;  // two batches had
    const auto saved = accelerator.save_state(dir.path / "ckpt");
    CHECK(saved == dir.path / "ckpt");
    for (const auto* name :
         {"model.safetensors", "optimizer.bin", "scheduler.bin", "scaler.pt", "random_states_0.bin", "acc_state.json"})
      CHECK_MESSAGE(fs::is_regular_file(dir.path / "ckpt" / name), name);
    CHECK_FALSE(fs::exists(dir.path / "ckpt" / "gradients_0.safetensors"));  // no accumulation in progress
    const auto metadata = nlohmann::json::parse(read_text(dir.path / "ckpt" / "acc_state.json"));
    CHECK(metadata["world_size"] == 1);
    CHECK(metadata["strategy"] == "NO");
    CHECK(metadata["precision"] == "scaled-fp32");
    CHECK(metadata["data_loaders"][0]["positions"][0]["batches"] == 2);
    for (const auto* name :
         {"model.safetensors", "optimizer.bin", "scheduler.bin", "scaler.pt", "random_states_0.bin"}) {
      CAPTURE(name);
      const auto bytes = read_text(dir.path / "ckpt" / name);
      CHECK(metadata["files"][name]["size"] == bytes.size());
      CHECK(metadata["files"][name]["crc32c"] == crc32c_text(bytes));
    }

    const auto contents = acc::safetensors::load_file(dir.path / "ckpt" / "model.safetensors");
    CHECK(contents.metadata.at("format") == "pt");
    CHECK(contents.tensors.size() == 4);
    for (const auto& p : net->named_parameters()) CHECK(at::equal(contents.tensors.at(p.key()), p.value()));
    // nothing else is left beside it
    for (const auto& entry : fs::directory_iterator(dir.path)) CHECK(entry.path().filename() == "ckpt");
  }

  TEST_CASE("register_for_checkpointing: a user object is saved and loaded with the state") {
    struct Counter {
      int64_t seen = 0;
      at::Tensor history = at::zeros({3});
      void save(torch::serialize::OutputArchive& archive) const {
        archive.write("seen", c10::IValue(seen));
        archive.write("history", history);
      }
      void load(torch::serialize::InputArchive& archive) {
        c10::IValue value;
        archive.read("seen", value);
        seen = value.toInt();
        archive.read("history", history);
      }
    };
    static_assert(acc::is_checkpointable_v<Counter>);
    static_assert(!acc::is_checkpointable_v<int>);
    TempDir dir;
    {
      acc::Accelerator<> accelerator(cpu_options());
      Counter counter{41, at::arange(3.0)};
      accelerator.register_for_checkpointing(counter);
      accelerator.save_state(dir.path);
    }
    CHECK(fs::is_regular_file(dir.path / "custom_checkpoint_0.bin"));
    acc::Accelerator<> accelerator(cpu_options());
    Counter counter;
    accelerator.register_for_checkpointing(counter);
    accelerator.load_state(dir.path);
    CHECK(counter.seen == 41);
    CHECK(at::equal(counter.history, at::arange(3.0)));
  }

  TEST_CASE("a resumed loader continues at the saved batch, and after an epoch's last batch at the next epoch") {
    for (const int had : {3, 10, 13}) {  // mid-epoch, exactly at the end of epoch 0, mid epoch 1
      CAPTURE(had);
      TempDir dir;
      std::vector<at::Tensor> expected;
      {
        acc::Accelerator<acc::Single, acc::FP32, acc::Shuffled> accelerator(cpu_options());
        auto loader = accelerator.prepare(acc::DataLoader(resume::Blobs{}, acc::DataLoaderOptions(8).seed(3)));
        int seen = 0;
        while (static_cast<int>(expected.size()) < 10) {
          for (auto& batch : loader) {
            if (++seen == had) accelerator.save_state(dir.path);
            if (seen > had) expected.push_back(batch.target);
            if (static_cast<int>(expected.size()) == 10) break;
          }
        }
      }
      acc::Accelerator<acc::Single, acc::FP32, acc::Shuffled> accelerator(cpu_options());
      auto loader = accelerator.prepare(acc::DataLoader(resume::Blobs{}, acc::DataLoaderOptions(8).seed(99)));
      accelerator.load_state(dir.path);  // the saved seed (3) replaces 99
      std::vector<at::Tensor> got;
      while (got.size() < 10) {
        std::size_t in_epoch = 0;
        for (auto& batch : loader) {
          got.push_back(batch.target);
          ++in_epoch;
          if (got.size() == 10) break;
        }
        // the first epoch after the resume has the rest of the saved one
        if (got.size() < 10) CHECK(in_epoch == static_cast<std::size_t>(10 - had % 10));
      }
      for (std::size_t i = 0; i < 10; ++i) CHECK(at::equal(got[i], expected[i]));
    }
  }

  TEST_CASE("a streaming loader resumes after the batches it had (it reads and drops them)") {
    struct Stream {  // the numbers 0 .. 29, again after reset()
      int64_t next_value = 0;
      std::optional<at::Tensor> next() {
        if (next_value == 30) return std::nullopt;
        return at::tensor(next_value++);
      }
      void reset() { next_value = 0; }
    };
    TempDir dir;
    {
      acc::Accelerator<> accelerator(cpu_options());
      auto loader = accelerator.prepare(acc::DataLoader(Stream{}, 4));
      auto it = loader.begin();
      ++it;  // batches {0..3}, {4..7} had
      accelerator.save_state(dir.path);
    }
    const auto metadata = nlohmann::json::parse(read_text(dir.path / "acc_state.json"));
    CHECK(metadata["data_loaders"][0]["dataset_size"] == -1);
    acc::Accelerator<> accelerator(cpu_options());
    auto loader = accelerator.prepare(acc::DataLoader(Stream{}, 4));
    accelerator.load_state(dir.path);
    std::vector<int64_t> firsts;
    for (auto& batch : loader) firsts.push_back(batch[0].item<int64_t>());
    CHECK(firsts == std::vector<int64_t>{8, 12, 16, 20, 24, 28});
  }

  TEST_CASE("a checkpoint of another precision loads, and the loss scaler's state goes only where both have one") {
    TempDir dir;
    const auto scaled_options = cpu_options().grad_scaler(acc::GradScalerOptions().init_scale(1024));
    {
      acc::Accelerator<acc::Single, ScaledFP32> scaled(scaled_options);
      resume::Net net;
      auto model = scaled.prepare(net);
      scaled.scaler()->load({256.0, 5});
      scaled.save_state(dir.path / "scaled");
      acc::Accelerator<> plain(cpu_options());
      auto plain_model = plain.prepare(net);
      plain.save_state(dir.path / "plain");
    }
    acc::Accelerator<acc::Single, ScaledFP32> scaled(scaled_options);
    resume::Net net;
    auto model = scaled.prepare(net);
    scaled.load_state(dir.path / "plain");  // no scaler.pt: the scaler stays as it is
    CHECK(scaled.scaler()->scale_value() == 1024.0);
    scaled.load_state(dir.path / "scaled");
    CHECK(scaled.scaler()->state().scale == 256.0);
    CHECK(scaled.scaler()->state().growth_tracker == 5);
    acc::Accelerator<> plain(cpu_options());
    auto plain_model = plain.prepare(net);
    CHECK(error_of([&] { plain.load_state(dir.path / "scaled"); }).empty());  // scaler.pt is not needed
  }

  TEST_CASE("set_epoch after load_state: the saved epoch keeps its position, another starts at its first batch") {
    TempDir dir;
    {
      acc::Accelerator<> accelerator(cpu_options());
      auto loader = accelerator.prepare(acc::DataLoader(resume::Blobs{}, 8));
      auto it = loader.begin();
      ++it;
      ++it;  // 3 batches of epoch 0 had
      accelerator.save_state(dir.path);
    }
    for (const int64_t epoch : {0, 1}) {
      acc::Accelerator<> accelerator(cpu_options());
      auto loader = accelerator.prepare(acc::DataLoader(resume::Blobs{}, 8));
      accelerator.load_state(dir.path);
      loader.set_epoch(epoch);
      std::size_t batches = 0;
      for (auto& batch : loader) batches += batch.target.size(0) > 0;
      CHECK(batches == (epoch == 0 ? 7u : 10u));
    }
  }

  TEST_CASE(
      "resume through skip_first_batches, as Python's checkpointing example: the next epochs follow bit for bit") {
    // The example: load_state, the rest of the saved epoch from skip_first_batches(n), then the
    // loader itself for the following epochs.
    using Accelerator = acc::Accelerator<acc::Single, acc::FP32, acc::Shuffled>;
    constexpr int kSavedAfter = 7;  // of the 10 batches of an epoch
    struct Trained {
      std::vector<at::Tensor> targets;
      std::vector<float> losses;
      std::vector<at::Tensor> parameters;
    };
    struct Job {
      Accelerator accelerator{cpu_options()};
      bool seeded;  // before the model is made
      resume::Net net;
      torch::optim::AdamW opt{net->parameters(), torch::optim::AdamWOptions(1e-2)};
      decltype(accelerator.prepare(net, opt, acc::DataLoader(resume::Blobs{}, acc::DataLoaderOptions(8).seed(5)))) p =
          accelerator.prepare(net, opt, acc::DataLoader(resume::Blobs{}, acc::DataLoaderOptions(8).seed(5)));
      Trained trained;
      explicit Job(uint64_t seed) : seeded((accelerator.set_seed(seed), true)) {}
      void step(const torch::data::Example<>& batch) {
        auto& [model, optimizer, loader] = p;
        optimizer.zero_grad();
        auto loss = torch::nn::functional::cross_entropy(model(batch.data), batch.target);
        accelerator.backward(loss);
        optimizer.step();
        trained.targets.push_back(batch.target);
        trained.losses.push_back(loss.item<float>());
      }
      Trained finish() {
        for (const auto& parameter : net->parameters()) trained.parameters.push_back(parameter.detach().clone());
        return trained;
      }
    };
    TempDir dir;
    Trained straight;
    {
      Job job(0);
      for (int epoch = 0; epoch < 3; ++epoch)
        for (auto& batch : std::get<2>(job.p)) job.step(batch);
      straight = job.finish();
    }
    {
      Job job(0);
      for (auto& batch : std::get<2>(job.p)) {
        job.step(batch);
        if (job.trained.losses.size() == kSavedAfter) break;
      }
      job.accelerator.save_state(dir.path);
    }
    Job job(999);  // other weights and generators, which load_state replaces
    job.accelerator.load_state(dir.path);
    auto& loader = std::get<2>(job.p);
    for (auto& batch : loader.skip_first_batches(kSavedAfter)) job.step(batch);
    for (int epoch = 1; epoch < 3; ++epoch)
      for (auto& batch : loader) job.step(batch);
    const auto resumed = job.finish();
    REQUIRE(resumed.losses.size() == straight.losses.size() - kSavedAfter);
    for (std::size_t i = 0; i < resumed.losses.size(); ++i) {
      CAPTURE(i);
      CHECK(at::equal(resumed.targets[i], straight.targets[kSavedAfter + i]));
      CHECK(resumed.losses[i] == straight.losses[kSavedAfter + i]);
    }
    for (std::size_t i = 0; i < straight.parameters.size(); ++i)
      CHECK(at::equal(resumed.parameters[i], straight.parameters[i]));
  }

  TEST_CASE("save_model / load_model: model.safetensors alone, into another model") {
    TempDir dir;
    acc::Accelerator<> accelerator(cpu_options());
    torch::manual_seed(1);
    resume::Net net;
    auto model = accelerator.prepare(net);
    accelerator.save_model(model, dir.path / "export");
    CHECK(std::vector<fs::path>(fs::directory_iterator(dir.path / "export"), {}) ==
          std::vector<fs::path>{dir.path / "export" / "model.safetensors"});
    for (const auto& from : {dir.path / "export", dir.path / "export" / "model.safetensors"}) {
      torch::manual_seed(2);
      resume::Net other;
      accelerator.load_model(other, from);
      const auto mine = net->parameters(), theirs = other->parameters();
      for (std::size_t i = 0; i < mine.size(); ++i) CHECK(at::equal(mine[i], theirs[i]));
    }
    resume::Net wider(64);
    const auto error = error_of([&] { accelerator.load_model(wider, dir.path / "export"); });
    CHECK(contains(error, "model.safetensors"));
    CHECK(contains(error, "wrong shapes: fc1.weight is [32, 8] there but [64, 8] in the model"));
  }

  TEST_CASE("ProjectConfiguration: numbered checkpoints, total_limit keeps the newest, load_state() the latest") {
    TempDir dir;
    const auto options = cpu_options().project_config(
        acc::ProjectConfiguration().project_dir(dir.path).automatic_checkpoint_naming(true).total_limit(2));
    acc::Accelerator<> accelerator(options);
    auto net = resume::Net();
    auto model = accelerator.prepare(net);
    std::vector<at::Tensor> weights;
    for (int i = 0; i < 4; ++i) {
      {
        at::NoGradGuard no_grad;
        net->fc1->weight.fill_(i);
      }
      CHECK(accelerator.save_state() == dir.path / "checkpoints" / ("checkpoint_" + std::to_string(i)));
    }
    const auto kept = acc::ProjectConfiguration().project_dir(dir.path).checkpoints();
    CHECK(kept ==
          std::vector<fs::path>{dir.path / "checkpoints" / "checkpoint_2", dir.path / "checkpoints" / "checkpoint_3"});
    // a save that fails keeps both: the oldest goes only once the new one is complete
    setenv("ACC_TEST_FAIL_SAVE_AT", "metadata", 1);
    CHECK(contains(error_of([&] { accelerator.save_state(); }), "stage 'metadata'"));
    unsetenv("ACC_TEST_FAIL_SAVE_AT");
    CHECK(acc::ProjectConfiguration().project_dir(dir.path).checkpoints() == kept);
    {
      at::NoGradGuard no_grad;
      net->fc1->weight.fill_(-1);
    }
    CHECK(accelerator.load_state() == dir.path / "checkpoints" / "checkpoint_3");
    CHECK(net->fc1->weight.eq(3).all().item<bool>());
    // the numbering goes on after the largest number there
    CHECK(accelerator.save_state() == dir.path / "checkpoints" / "checkpoint_4");

    acc::Accelerator<> plain(cpu_options());
    CHECK(contains(error_of([&] { plain.save_state(); }), "automatic_checkpoint_naming"));
    CHECK(contains(error_of([&] { plain.load_state(); }), "automatic_checkpoint_naming"));
  }

  TEST_CASE("a save that fails at any stage leaves the previous checkpoint loadable and nothing else") {
    // Everything that has a stage: model, optimizer, scheduler, scaler, a registered object, a
    // loader, and gradient accumulation (saved mid-cycle, so gradients are written too).
    TempDir dir;
    const auto target = dir.path / "ckpt";
    acc::Accelerator<acc::Single, ScaledFP32, acc::Shuffled> accelerator(cpu_options().gradient_accumulation_steps(2));
    resume::Net net;
    torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(1e-2));
    torch::optim::StepLR sched(opt, 1, 0.5);
    torch::nn::Linear extra(2, 2);
    accelerator.register_for_checkpointing(*extra);
    auto [model, optimizer, loader, scheduler] =
        accelerator.prepare(net, opt, acc::DataLoader(resume::Blobs{}, 8), sched);
    auto it = loader.begin();
    // The next batch (into a new epoch when one ends): backward, and the step when asked.
    const auto micro_batch = [&](bool step_optimizer) {
      if (it == loader.end()) it = loader.begin();
      auto step = accelerator.accumulate(model);
      accelerator.backward(torch::nn::functional::cross_entropy(model(it->data), it->target));
      ++it;
      if (!step_optimizer) return;
      optimizer.step();
      scheduler.step();
      optimizer.zero_grad();
    };
    const auto train_two = [&] {
      micro_batch(true);
      micro_batch(true);
    };
    train_two();
    accelerator.save_state(target);  // checkpoint A, at a synchronizing micro-step
    train_two();
    for (const std::string stage : {"directory", "model", "optimizer", "scheduler", "scaler", "custom", "random_states",
                                    "gradients", "metadata", "rename"}) {
      CAPTURE(stage);
      micro_batch(false);  // one more backward: the save happens mid-cycle, with gradients to write
      std::vector<at::Tensor> now;
      for (const auto& p : net->parameters()) now.push_back(p.detach().clone());
      const auto before = acc::safetensors::load_file(target / "model.safetensors").tensors;
      setenv("ACC_TEST_FAIL_SAVE_AT", stage.c_str(), 1);
      const auto error = error_of([&] { accelerator.save_state(target); });
      unsetenv("ACC_TEST_FAIL_SAVE_AT");
      CHECK(contains(error, "stage '" + stage + "'"));
      CHECK(contains(error, target.string()));
      for (const auto& entry : fs::directory_iterator(dir.path)) CHECK(entry.path().filename() == "ckpt");
      // What the directory holds loads, and is the previous checkpoint (the new one once renamed).
      accelerator.load_state(target);
      const auto loaded = net->named_parameters();
      for (std::size_t i = 0; i < now.size(); ++i)
        CHECK(at::equal(loaded[i].value(), stage == "rename" ? now[i] : before.at(loaded[i].key())));
      train_two();
    }
  }

  TEST_CASE("load_state of a bad checkpoint names the file and the problem, and changes nothing") {
    TempDir dir;
    const auto ckpt = dir.path / "ckpt";
    acc::Accelerator<> accelerator(cpu_options());
    resume::Net net;
    torch::optim::AdamW opt(net->parameters());
    auto [model, optimizer] = accelerator.prepare(net, opt);
    accelerator.save_state(ckpt);
    const auto weight = net->fc1->weight.detach().clone();
    const auto fresh_copy = [&] {
      acc::detail::remove_tree(dir.path / "bad");
      fs::copy(ckpt, dir.path / "bad");
      return dir.path / "bad";
    };
    const auto load_error = [&](const fs::path& from) {
      {
        at::NoGradGuard no_grad;
        net->fc1->weight.fill_(7);
      }
      const auto error = error_of([&] { accelerator.load_state(from); });
      CHECK(net->fc1->weight.eq(7).all().item<bool>());  // nothing changed
      {
        at::NoGradGuard no_grad;
        net->fc1->weight.copy_(weight);
      }
      return error;
    };

    CHECK(contains(load_error(dir.path / "nowhere"), "'" + (dir.path / "nowhere").string() + "' does not exist"));

    auto bad = fresh_copy();
    fs::remove(bad / "acc_state.json");  // what a save killed before its end leaves
    CHECK(contains(load_error(bad), "acc_state.json' is missing: not a checkpoint, or one whose save did not finish"));

    bad = fresh_copy();
    fs::resize_file(bad / "model.safetensors", fs::file_size(bad / "model.safetensors") - 5);
    auto error = load_error(bad);
    CHECK(contains(error, (bad / "model.safetensors").string()));
    CHECK(contains(error, "truncated"));

    bad = fresh_copy();
    fs::remove(bad / "optimizer.bin");
    CHECK(contains(load_error(bad), (bad / "optimizer.bin").string() + "' is missing"));

    bad = fresh_copy();
    write_text(bad / "optimizer.bin", std::string(fs::file_size(ckpt / "optimizer.bin"), 'x'));  // same size, garbage
    error = load_error(bad);
    CHECK(contains(error, (bad / "optimizer.bin").string()));
    CHECK(contains(error, "does not match its checksum"));

    bad = fresh_copy();
    write_text(bad / "acc_state.json", "{\"format\": 1, \"world_size\": ");
    CHECK(contains(load_error(bad), "acc_state.json' is not a valid checkpoint description"));

    bad = fresh_copy();
    auto metadata = nlohmann::json::parse(read_text(ckpt / "acc_state.json"));
    metadata["strategy"] = "FSDP";
    metadata["layout"] = "flat_shards";
    write_text(bad / "acc_state.json", metadata.dump());
    CHECK(contains(load_error(bad),
                   "saved with strategy FSDP, whose files hold the flat_shards layout, and this "
                   "Accelerator uses NO, which reads the replicated layout"));

    bad = fresh_copy();  // renamed parameters: missing and unexpected keys, by name
    auto tensors = acc::safetensors::load_file(ckpt / "model.safetensors").tensors;
    std::vector<std::pair<std::string, at::Tensor>> renamed;
    for (const auto& [name, t] : tensors) renamed.emplace_back(name == "fc2.bias" ? "head.bias" : name, t);
    acc::safetensors::save_file(renamed, bad / "model.safetensors");
    metadata = nlohmann::json::parse(read_text(ckpt / "acc_state.json"));
    const auto renamed_bytes = read_text(bad / "model.safetensors");
    metadata["files"]["model.safetensors"] = {{"size", renamed_bytes.size()}, {"crc32c", crc32c_text(renamed_bytes)}};
    write_text(bad / "acc_state.json", metadata.dump());
    error = load_error(bad);
    CHECK(contains(error, (bad / "model.safetensors").string()));
    CHECK(contains(error, "missing keys: fc2.bias; unexpected keys: head.bias"));

    {  // Found: an optimizer of other parameter groups failed in libtorch's load after the weights
       // were loaded. Now refused first: against one group, two; against two, two of other sizes.
      const auto load_grouped = [&](const fs::path& from, std::size_t first_group, bool save) {
        acc::Accelerator<> grouped(cpu_options());
        resume::Net grouped_net;
        const auto params = grouped_net->parameters();
        std::vector<torch::optim::OptimizerParamGroup> groups;
        groups.emplace_back(std::vector<at::Tensor>(params.begin(), params.begin() + first_group));
        groups.emplace_back(std::vector<at::Tensor>(params.begin() + first_group, params.end()));
        torch::optim::AdamW adamw(groups, torch::optim::AdamWOptions());
        auto prepared = grouped.prepare(grouped_net, adamw);
        if (save) return grouped.save_state(from).string();
        {
          at::NoGradGuard no_grad;
          for (auto& p : grouped_net->parameters()) p.fill_(7);
        }
        auto message = error_of([&] { grouped.load_state(from); });
        for (const auto& p : grouped_net->parameters()) CHECK(p.eq(7).all().item<bool>());  // nothing changed
        CHECK(contains(message, "'" + (from / "optimizer.bin").string() + "': "));
        return message;
      };
      CHECK(contains(load_grouped(ckpt, 1, false),
                     "the optimizer state holds 1 parameter group(s), and the prepared optimizer has 2: build the "
                     "optimizer with the parameter groups of the run that saved it"));
      load_grouped(dir.path / "grouped", 1, true);
      CHECK(contains(load_grouped(dir.path / "grouped", 2, false),
                     "the optimizer state's parameter group 0 holds 1 parameter(s), and the prepared optimizer's has "
                     "2: build the optimizer"));
    }

    // other objects prepared than were saved
    acc::Accelerator<> other(cpu_options());
    auto loader = other.prepare(acc::DataLoader(resume::Blobs{}, 8));
    error = error_of([&] { other.load_state(ckpt); });
    CHECK(contains(error, "the checkpoint holds 1 models and 0 were prepared before load_state"));

    {  // the good one still loads
      at::NoGradGuard no_grad;
      net->fc1->weight.fill_(7);
    }
    CHECK(error_of([&] { accelerator.load_state(ckpt); }).empty());
    CHECK(at::equal(net->fc1->weight, weight));
  }

  TEST_CASE(
      "a write that fails (a file size limit, as a full disk) is an acc::Error naming the file, its directory "
      "and the limit; the previous checkpoint stays and nothing else is left") {
    // With an optimizer the first file written is a torch archive (libtorch's writer aborted the
    // process after a failed write); without one it is model.safetensors (our own writer).
    const auto check = [](auto with_optimizer) {
      CAPTURE(with_optimizer.value);
      TempDir dir;
      const auto target = dir.path / "ckpt";
      acc::Accelerator<> accelerator(cpu_options());
      resume::Net net;
      torch::optim::AdamW opt(net->parameters());
      auto prepared = [&] {
        if constexpr (decltype(with_optimizer)::value)
          return accelerator.prepare(net, opt);
        else
          return accelerator.prepare(net);
      }();
      fill_weights(net, 1);
      accelerator.save_state(target);
      fill_weights(net, 2);
      std::string error;
      {
        const FileSizeLimit limit(1024);  // the model's parameters alone are 1548 bytes
        error = error_of([&] { accelerator.save_state(target); });
      }
      CHECK(contains(error, "save_state('" + target.string() + "') failed and left what was there before"));
      CHECK(contains(error, "cannot write '" + target.string() + ".tmp-"));
      CHECK(contains(error, with_optimizer.value ? "optimizer.bin" : "model.safetensors"));
      CHECK(contains(error, "File too large after"));
      CHECK(contains(error, "this process may write files of at most 1024 bytes (ulimit -f)"));
      for (const auto& entry : fs::directory_iterator(dir.path)) CHECK(entry.path().filename() == "ckpt");
      accelerator.load_state(target);
      CHECK(weights_are(net, 1));
    };
    check(std::true_type{});
    check(std::false_type{});
  }

  TEST_CASE(
      "a disk without room for the checkpoint's tensors fails before anything is written, naming the directory, "
      "the bytes needed and free") {
    struct HugeImpl : torch::nn::Module {  // a 16 TiB buffer that takes no memory (a stride-0 view)
      HugeImpl() { register_buffer("huge", at::zeros({1}).expand({int64_t{1} << 42})); }
    };
    TempDir dir;
    acc::Accelerator<> accelerator(cpu_options());
    auto huge = std::make_shared<HugeImpl>();
    auto model = accelerator.prepare(torch::nn::ModuleHolder<HugeImpl>(huge));
    const auto error = error_of([&] { accelerator.save_state(dir.path / "ckpt"); });
    CHECK(contains(error, "not enough space in '" + dir.path.string() + "'"));
    CHECK(contains(error, "needs at least 17592186044416 bytes and its file system has "));
    CHECK(contains(error, " bytes free ("));
    CHECK(fs::is_empty(dir.path));
  }

  TEST_CASE("the temporary directories that killed saves left are removed by the next save of the same target") {
    TempDir dir;
    const auto target = dir.path / "ckpt";
    const auto dead = std::to_string(ended_process());
    const auto alive = std::to_string(::getppid());  // another process's save in progress: kept
    for (const auto& name : {"ckpt.tmp-" + dead, "ckpt.tmp-" + dead + ".old", "ckpt.tmp-" + alive, "other.tmp-" + dead})
      fs::create_directories(dir.path / name / "inside");
    fs::create_directories(dir.path / "export" / ("model.safetensors.tmp-" + dead));
    acc::Accelerator<> accelerator(cpu_options());
    resume::Net net;
    auto model = accelerator.prepare(net);
    accelerator.save_state(target);
    accelerator.save_model(model, dir.path / "export");
    std::vector<std::string> left;
    for (const auto& entry : fs::directory_iterator(dir.path)) left.push_back(entry.path().filename().string());
    std::sort(left.begin(), left.end());
    CHECK(left == std::vector<std::string>{"ckpt", "ckpt.tmp-" + alive, "export", "other.tmp-" + dead});
    CHECK(std::vector<fs::path>(fs::directory_iterator(dir.path / "export"), {}) ==
          std::vector<fs::path>{dir.path / "export" / "model.safetensors"});
  }

  // Found: where directories cannot be exchanged (NFS), a save killed between moving the previous
  // checkpoint aside and the new one in left neither in place, and the next save deleted both.
  TEST_CASE("a save killed between its two renames: the next one puts the previous checkpoint back first") {
    TempDir dir;
    const auto target = dir.path / "ckpt";
    const auto dead = std::to_string(ended_process());
    fs::create_directories(dir.path / ("ckpt.tmp-" + dead + ".old") / "previous");
    fs::create_directories(dir.path / ("ckpt.tmp-" + dead) / "new");
    acc::detail::remove_stale_staging(target);
    CHECK(fs::exists(target / "previous"));
    CHECK(std::vector<fs::path>(fs::directory_iterator(dir.path), {}) == std::vector<fs::path>{target});
    // With the target in place, an .old one is stale like the rest.
    fs::create_directories(dir.path / ("ckpt.tmp-" + dead + ".old") / "older");
    acc::detail::remove_stale_staging(target);
    CHECK(fs::exists(target / "previous"));
    CHECK(std::vector<fs::path>(fs::directory_iterator(dir.path), {}) == std::vector<fs::path>{target});
  }

  TEST_CASE("a byte changed in any file of a checkpoint: load_state names the file and its checksum, changes nothing") {
    TempDir dir;
    const auto ckpt = dir.path / "ckpt";
    acc::Accelerator<acc::Single, ScaledFP32, acc::Shuffled> accelerator(cpu_options().gradient_accumulation_steps(2));
    resume::Net net;
    torch::optim::AdamW opt(net->parameters());
    torch::optim::StepLR sched(opt, 1);
    torch::nn::Linear extra(2, 2);
    accelerator.register_for_checkpointing(*extra);
    auto [model, optimizer, scheduler, loader] =
        accelerator.prepare(net, opt, sched, acc::DataLoader(resume::Blobs{}, 8));
    auto it = loader.begin();
    {
      auto step = accelerator.accumulate(model);  // mid-cycle: gradients_0.safetensors too
      accelerator.backward(torch::nn::functional::cross_entropy(model(it->data), it->target));
    }
    fill_weights(net, 1);
    accelerator.save_state(ckpt);
    std::size_t files = 0;
    for (const auto& entry : fs::directory_iterator(ckpt)) {
      const auto name = entry.path().filename().string();
      if (name == "acc_state.json") continue;
      CAPTURE(name);
      ++files;
      acc::detail::remove_tree(dir.path / "bad");
      fs::copy(ckpt, dir.path / "bad");
      flip_last_byte(dir.path / "bad" / name);
      fill_weights(net, 7);
      const auto error = error_of([&] { accelerator.load_state(dir.path / "bad"); });
      CHECK(contains(error, "'" + (dir.path / "bad" / name).string() + "' does not match its checksum: CRC-32C "));
      CHECK(weights_are(net, 7));
    }
    CHECK(files == 7);  // model, optimizer, scheduler, scaler, custom object, random states, gradients
    accelerator.load_state(ckpt);
    CHECK(weights_are(net, 1));
  }

  TEST_CASE("load_state() loads the newest intact checkpoint, passing over damaged ones; none intact is an error") {
    TempDir dir;
    const auto options = cpu_options().project_config(
        acc::ProjectConfiguration().project_dir(dir.path).automatic_checkpoint_naming(true));
    acc::Accelerator<> accelerator(options);
    resume::Net net;
    auto model = accelerator.prepare(net);
    for (int i = 0; i < 3; ++i) {
      fill_weights(net, i);
      accelerator.save_state();
    }
    const auto checkpoint = [&](int i) { return dir.path / "checkpoints" / ("checkpoint_" + std::to_string(i)); };
    flip_last_byte(checkpoint(2) / "model.safetensors");
    fill_weights(net, -1);
    CHECK(accelerator.load_state() == checkpoint(1));
    CHECK(weights_are(net, 1));

    flip_last_byte(checkpoint(1) / "random_states_0.bin");
    fs::remove(checkpoint(0) / "acc_state.json");
    fill_weights(net, -1);
    const auto error = error_of([&] { accelerator.load_state(); });
    CHECK(contains(error, "load_state() found no intact checkpoint under '" + (dir.path / "checkpoints").string()));
    CHECK(contains(error, (checkpoint(2) / "model.safetensors").string() + "' does not match its checksum"));
    CHECK(contains(error, (checkpoint(1) / "random_states_0.bin").string() + "' does not match its checksum"));
    CHECK(contains(error, (checkpoint(0) / "acc_state.json").string() + "' is missing"));
    CHECK(weights_are(net, -1));
    // a directory named explicitly is loaded or refused, never replaced by another
    CHECK(contains(error_of([&] { accelerator.load_state(checkpoint(2)); }), "does not match its checksum"));
  }

  TEST_CASE("total_limit removes old checkpoints only once the new one reads back as written") {
    struct Saboteur {  // changes a byte of the staged model.safetensors after it was written
      fs::path file;
      void save(torch::serialize::OutputArchive&) const {
        if (!file.empty()) flip_last_byte(file);
      }
      void load(torch::serialize::InputArchive&) {}
    };
    TempDir dir;
    const auto project =
        acc::ProjectConfiguration().project_dir(dir.path).automatic_checkpoint_naming(true).total_limit(2);
    acc::Accelerator<> accelerator(cpu_options().project_config(project));
    resume::Net net;
    auto model = accelerator.prepare(net);
    Saboteur saboteur;
    accelerator.register_for_checkpointing(saboteur);
    accelerator.save_state();
    accelerator.save_state();
    const auto checkpoint = [&](int i) { return dir.path / "checkpoints" / ("checkpoint_" + std::to_string(i)); };
    const auto kept = std::vector<fs::path>{checkpoint(0), checkpoint(1)};
    saboteur.file = checkpoint(2).string() + ".tmp-" + std::to_string(::getpid()) + "/model.safetensors";
    const auto error = error_of([&] { accelerator.save_state(); });
    CHECK(contains(error,
                   "the checkpoint just written does not read back as it was written, so it was removed and no "
                   "older checkpoint was"));
    CHECK(contains(error, (checkpoint(2) / "model.safetensors").string() + "' does not match its checksum"));
    CHECK(project.checkpoints() == kept);
    saboteur.file.clear();
    CHECK(accelerator.save_state() == checkpoint(2));
    CHECK(project.checkpoints() == std::vector<fs::path>{checkpoint(1), checkpoint(2)});
  }

  TEST_CASE("a second job on the same project_dir fails naming the directory and the holder, until the first ends") {
    TempDir dir;
    const auto options = cpu_options().project_config(
        acc::ProjectConfiguration().project_dir(dir.path).automatic_checkpoint_naming(true));
    {
      acc::Accelerator<> first(options);
      resume::Net net;
      auto model = first.prepare(net);
      first.save_state();
      acc::Accelerator<> second(options);
      auto second_model = second.prepare(net);
      for (const auto& error : {error_of([&] { second.save_state(); }), error_of([&] { second.load_state(); })}) {
        CHECK(contains(error, "project_dir '" + dir.path.string() + "' is in use by another job (pid " +
                                  std::to_string(::getpid()) + " on host "));
        CHECK(contains(error, (dir.path / "checkpoints" / ".lock").string()));
        CHECK(contains(error, "Give this job its own project_dir, or end the other one"));
      }
      CHECK(options.project_config().checkpoints() == std::vector<fs::path>{dir.path / "checkpoints" / "checkpoint_0"});
    }
    acc::Accelerator<> third(options);
    resume::Net net;
    auto model = third.prepare(net);
    CHECK(third.load_state() == dir.path / "checkpoints" / "checkpoint_0");
    CHECK(third.save_state() == dir.path / "checkpoints" / "checkpoint_1");
  }

  TEST_CASE(
      "hand-edited manifests: every value replaced by hostile ones is loaded or refused naming its key, and "
      "nothing outside the checkpoint is read") {
    TempDir dir;
    const auto ckpt = dir.path / "ckpt";
    acc::Accelerator<acc::Single, acc::FP32, acc::Shuffled> accelerator(cpu_options());
    resume::Net net;
    torch::optim::AdamW opt(net->parameters());
    auto [model, optimizer, loader] = accelerator.prepare(net, opt, acc::DataLoader(resume::Blobs{}, 8));
    auto it = loader.begin();
    fill_weights(net, 1);
    accelerator.save_state(ckpt);
    // A model file beside the checkpoint, which a manifest must never lead to.
    std::vector<std::pair<std::string, at::Tensor>> outside;
    for (const auto& p : net->named_parameters()) outside.emplace_back(p.key(), at::full_like(p.value(), 42));
    acc::safetensors::save_file(outside, dir.path / "outside.safetensors");
    const auto original = nlohmann::json::parse(read_text(ckpt / "acc_state.json"));
    const auto load_with = [&](const nlohmann::json& manifest) {
      write_text(ckpt / "acc_state.json", manifest.dump());
      fill_weights(net, 7);
      const auto error = error_of([&] { accelerator.load_state(ckpt); });
      CHECK_FALSE(weights_are(net, 42));
      CHECK(weights_are(net, error.empty() ? 1 : 7));  // loaded, or nothing changed
      return error;
    };

    // Every value (leaves, lists, objects), by its JSON pointer and by the name messages give it.
    std::vector<std::pair<nlohmann::json::json_pointer, std::string>> keys;
    const std::function<void(const nlohmann::json&, const nlohmann::json::json_pointer&, const std::string&)> walk =
        [&](const nlohmann::json& value, const nlohmann::json::json_pointer& pointer, const std::string& key) {
          if (!key.empty()) keys.emplace_back(pointer, key);
          if (value.is_object())
            for (const auto& [name, child] : value.items())
              walk(child, pointer / name,
                   key.empty()      ? name
                   : key == "files" ? key + "[\"" + name + "\"]"
                                    : key + "." + name);
          if (value.is_array())
            for (std::size_t i = 0; i < value.size(); ++i)
              walk(value[i], pointer / i, key + "[" + std::to_string(i) + "]");
        };
    walk(original, nlohmann::json::json_pointer(), "");
    const auto has_key = [&](const std::string& key) {
      return std::any_of(keys.begin(), keys.end(), [&](const auto& k) { return k.second == key; });
    };
    REQUIRE(has_key("data_loaders[0].positions[0].batches"));
    REQUIRE(has_key("files[\"model.safetensors\"].crc32c"));
    const std::vector<nlohmann::json> hostile{-1,
                                              INT64_MIN,
                                              UINT64_MAX,
                                              1e300,
                                              0.5,
                                              "",
                                              "../outside.safetensors",
                                              (dir.path / "outside.safetensors").string(),
                                              std::string(300, 'a'),
                                              nullptr,
                                              true,
                                              nlohmann::json::array(),
                                              nlohmann::json::object()};
    int refused = 0;
    for (const auto& [pointer, key] : keys)
      for (const auto& value : hostile) {
        CAPTURE(key);
        CAPTURE(value.dump());
        auto manifest = original;
        const bool same_type = manifest[pointer].type() == value.type() ||
                               (manifest[pointer].is_number_integer() && value.is_number_integer());
        manifest[pointer] = value;
        const auto error = load_with(manifest);
        refused += !error.empty();
        if (!same_type) CHECK(contains(error, key));  // a value of another type is refused, by its key
      }
    CHECK(refused > static_cast<int>(keys.size()) * 9);

    const auto refusal = [&](const std::string& pointer, const nlohmann::json& value) {
      auto manifest = original;
      manifest[nlohmann::json::json_pointer(pointer)] = value;
      return load_with(manifest);
    };
    CHECK(contains(refusal("/step", -1), "step is -1; allowed: an integer from 0 to 9223372036854775807"));
    CHECK(contains(refusal("/world_size", 0), "world_size is 0; allowed: an integer from 1 to 1048576"));
    CHECK(contains(refusal("/data_loaders/0/positions/0/batches", int64_t{1} << 50),
                   "data_loaders[0].positions[0].batches is 1125899906842624; allowed: an integer from 0 to 10"));
    CHECK(contains(refusal("/data_loaders/0/positions/0/epoch", -3),
                   "data_loaders[0].positions[0].epoch is -3; allowed: an integer from 0 to"));
    CHECK(contains(refusal("/models/0", "../outside.safetensors"),
                   "models[0] is \"../outside.safetensors\"; allowed: the name of a file in the checkpoint directory"));
    CHECK(contains(refusal("/models/0", (dir.path / "outside.safetensors").string()), "models[0] is \""));
    CHECK(contains(refusal("/files/..~1outside.safetensors", original["files"]["model.safetensors"]),
                   "files names \"../outside.safetensors\"; allowed: names of files in the checkpoint directory"));
    CHECK(contains(refusal("/files/model.safetensors/crc32c", "0123456789"),
                   "files[\"model.safetensors\"].crc32c is \"0123456789\"; allowed: 8 lowercase hexadecimal digits"));
    CHECK(load_with(original).empty());
  }

  TEST_CASE("the strategy check compares the files' layout, not the strategy's name") {
    acc::CheckpointMetadata gloo;
    gloo.strategy = "MULTI_CPU";
    gloo.layout = "replicated";
    gloo.random_states = {"random_states_0.bin"};
    CHECK(gloo.strategy_mismatch("MULTI_GPU", "replicated").empty());  // DDP<Gloo> into DDP<Nccl>
    CHECK(gloo.strategy_mismatch("NO", "replicated").empty());
    CHECK(gloo.strategy_mismatch("FSDP", "flat_shards") ==
          "the checkpoint was saved with strategy MULTI_CPU, whose files hold the replicated layout, and this "
          "Accelerator uses FSDP, which reads the flat_shards layout");
    // acc_state.json records the layout; one written before it did needs the same strategy
    TempDir dir;
    auto json = nlohmann::json::parse(gloo.to_json());
    CHECK(json.at("layout") == "replicated");
    json.erase("layout");
    write_text(dir.path / "acc_state.json", json.dump());
    const auto older = acc::CheckpointMetadata::read(dir.path);
    CHECK(older.layout.empty());
    CHECK(older.strategy_mismatch("MULTI_CPU", "replicated").empty());
    CHECK(older.strategy_mismatch("MULTI_GPU", "replicated") ==
          "the checkpoint was saved with strategy MULTI_CPU, and this Accelerator uses MULTI_GPU");
  }

#if ACC_HAS_GLOO
  TEST_CASE("a checkpoint of Single resumes under DDP at one process bit for bit: their files have one layout") {
    TempDir dir;
    const auto options = cpu_options();
    const resume::Recipe recipe;
    const auto straight = resume::train<acc::Single, acc::FP32, acc::Shuffled>(options, recipe, 0, 20);
    resume::train<acc::Single, acc::FP32, acc::Shuffled>(options, recipe, 0, 7, {}, dir.path / "ckpt");
    const auto resumed = resume::train<acc::CPU, acc::FP32, acc::Shuffled>(options, recipe, 7, 13, dir.path / "ckpt");
    REQUIRE(resumed.losses.size() == 13);
    for (std::size_t i = 0; i < 13; ++i) CHECK(resumed.losses[i] == straight.losses[7 + i]);
    for (std::size_t i = 0; i < straight.parameters.size(); ++i)
      CHECK(at::equal(resumed.parameters[i], straight.parameters[i]));
  }

  TEST_CASE("a checkpoint whose files have another layout does not load, and says which") {
    TempDir dir;
    {
      acc::Accelerator<> single(cpu_options());
      resume::Net net;
      auto model = single.prepare(net);
      single.save_state(dir.path);
    }
    acc::Accelerator<acc::FSDP<acc::Gloo, acc::FullShard>> fsdp(cpu_options());
    resume::Net net;
    auto model = fsdp.prepare(net);
    const auto error = error_of([&] { fsdp.load_state(dir.path); });
    CHECK(contains(error, (dir.path / "acc_state.json").string()));
    CHECK(contains(error,
                   "saved with strategy NO, whose files hold the replicated layout, and this Accelerator uses "
                   "FSDP, which reads the flat_shards layout"));
  }
#endif
}
