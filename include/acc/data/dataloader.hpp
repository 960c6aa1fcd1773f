// acc::DataLoader: batches from any random-access dataset (anything with size() and get(i),
// libtorch's torch::data datasets included), in the order of a sampler policy, sharded across
// processes and moved to the accelerator's device one batch ahead of use.
#pragma once

#include <acc/data/batch_dispatch.hpp>
#include <acc/data/collate.hpp>
#include <acc/data/sampler.hpp>
#include <acc/detail/linkage.hpp>
#include <acc/detail/tensor_tree.hpp>
#include <acc/error.hpp>

#include <c10/core/Device.h>
#include <c10/util/Optional.h>
#include <torch/arg.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace acc {

class DataLoaderOptions {
 public:
  /* implicit */ DataLoaderOptions(int64_t batch_size = 1) : batch_size_(batch_size) {}

  // Samples per batch on each process (or in all processes together with split_batches).
  TORCH_ARG(int64_t, batch_size);
  // Drop the last batch when it is smaller than batch_size.
  TORCH_ARG(bool, drop_last) = false;
  // Seed of the sampler's order; combined with the epoch, so every epoch has its own order.
  TORCH_ARG(uint64_t, seed) = 0;
  // The order: shuffled (true) or index order (false). Unset, the sampler decides: the loader's
  // own, or else the sampler policy of the Accelerator that prepares the loader.
  TORCH_ARG(std::optional<bool>, shuffle) = std::nullopt;
  // Copy batches to a CUDA device from pinned memory without blocking the host.
  TORCH_ARG(bool, non_blocking) = true;
};

// Which share of the batches this process reads; set by Accelerator::prepare.
struct Sharding {
  int rank = 0;
  int world_size = 1;
  // Give every process the same number of batches by cycling from the start of the epoch's order.
  bool even_batches = true;
  // batch_size is the global batch: each process takes a 1/world_size slice of every batch.
  bool split_batches = false;
  // The main process reads the dataset and sends every process its batches (Accelerate's
  // dispatch_batches), which are those the process would have read itself. Unset: streams are
  // dispatched and random-access datasets read by every process, as in Accelerate.
  std::optional<bool> dispatch_batches = std::nullopt;
};

// Where the iteration of a prepared loader stands; gather_for_metrics reads it to drop the
// samples that even_batches repeated at the end of the epoch.
struct LoaderProgress {
  bool end_of_dataloader = false;
  int64_t duplicates = 0;  // samples repeated across all processes in this epoch's last round
};

// The iterations of prepared loaders under way, innermost last (an evaluation loop inside a
// training loop), shared by an Accelerator and the loaders it prepared, as Python's GradientState:
// the batch in use belongs to the innermost, and outside every loader no batch ends an epoch.
class ActiveLoaders {
 public:
  // The innermost iteration's progress; nullptr outside every prepared loader.
  const LoaderProgress* innermost() const { return running_.empty() ? nullptr : running_.back().get(); }

  // An iteration under way for as long as the returned handle (and its copies) live.
  static std::shared_ptr<LoaderProgress> enter(const std::shared_ptr<ActiveLoaders>& loaders) {
    auto progress = std::make_shared<LoaderProgress>();
    loaders->running_.push_back(progress);
    const std::weak_ptr<ActiveLoaders> registry = loaders;
    return std::shared_ptr<LoaderProgress>(progress.get(), [registry, progress](LoaderProgress*) {
      if (const auto loaders = registry.lock()) {
        auto& running = loaders->running_;
        running.erase(std::remove(running.begin(), running.end(), progress), running.end());
      }
    });
  }

 private:
  std::vector<std::shared_ptr<LoaderProgress>> running_;
};

// The sampler's seed and where a loader's next batch comes from, shared by the loader and its
// copies: the Accelerator that prepared it saves this in checkpoints, and load_state sets it with
// `resume`, so that the loader's next begin() continues exactly there.
struct LoaderPosition {
  uint64_t seed = 0;
  int64_t epoch = 0;    // the epoch of the next batch
  int64_t batches = 0;  // batches of that epoch already had (the one in use included)
  bool resume = false;
};

namespace detail {

struct BatchPlan {
  std::vector<std::vector<int64_t>> batches;  // this process's batches, as dataset indices
  int64_t duplicates = 0;                     // samples repeated (across all processes) to even out
};

// Process `rank`'s slice [begin, end) of a round of `size` examples in which each process takes
// `share` from the first process on (a global batch under split_batches, share batch_size /
// processes): a short last round leaves the last processes less, or nothing (as in Accelerate).
inline std::pair<int64_t, int64_t> slice_of_round(int64_t size, int64_t share, int rank) {
  const int64_t begin = std::min(size, share * rank);
  return {begin, std::min(size, begin + share)};
}

// This process's batches for one epoch, given the sampler's order.
ACC_DECL BatchPlan plan_batches(const std::vector<int64_t>& order, const DataLoaderOptions& options,
                                const Sharding& shard);

template <class Dataset>
std::size_t dataset_size(Dataset& dataset) {
  const auto size = dataset.size();
  if constexpr (std::is_integral_v<std::decay_t<decltype(size)>>) {
    return static_cast<std::size_t>(size);
  } else {
    if (!size.has_value())
      throw Error(
          "this dataset reports no size(); give it `std::optional<Example> next()` (and `reset()` for "
          "more than one epoch) to load it as a stream");
    return *size;
  }
}

// A streaming dataset hands out examples one by one through `std::optional<Example> next()`,
// empty at its end; `reset()`, if it has one, starts it over for the next epoch.
template <class D, class = void>
struct is_stream : std::false_type {};
template <class D>
struct is_stream<D, std::void_t<decltype(*std::declval<D&>().next())>> : std::true_type {};
template <class D, class = void>
struct has_reset : std::false_type {};
template <class D>
struct has_reset<D, std::void_t<decltype(std::declval<D&>().reset())>> : std::true_type {};

template <class Dataset, bool = is_stream<Dataset>::value>
struct example_of {
  using type = std::decay_t<decltype(std::declval<Dataset&>().get(std::size_t{}))>;
};
template <class Dataset>
struct example_of<Dataset, true> {
  using type = std::decay_t<decltype(*std::declval<Dataset&>().next())>;
};

// This process's batches of a random-access dataset, in the order of a plan.
template <class Dataset, class Example>
class PlannedBatches {
 public:
  PlannedBatches(std::shared_ptr<Dataset> dataset, BatchPlan plan)
      : dataset_(std::move(dataset)), plan_(std::move(plan)) {}
  std::optional<std::vector<Example>> next() {
    if (position_ == plan_.batches.size()) return std::nullopt;
    std::vector<Example> examples;
    examples.reserve(plan_.batches[position_].size());
    for (const auto index : plan_.batches[position_])
      examples.push_back(dataset_->get(static_cast<std::size_t>(index)));
    ++position_;
    return examples;
  }
  int64_t duplicates() const { return plan_.duplicates; }

 private:
  std::shared_ptr<Dataset> dataset_;
  BatchPlan plan_;
  std::size_t position_ = 0;
};

// The rounds of a stream, in its order: one batch per process, or one global batch with
// split_batches. Evening out the last round reuses the first one's examples, like even_batches
// for random-access datasets.
template <class Dataset, class Example>
class StreamedRounds {
 public:
  StreamedRounds(std::shared_ptr<Dataset> stream, const DataLoaderOptions& options, const Sharding& shard)
      : stream_(std::move(stream)), options_(options), shard_(shard) {}
  // The next round's examples; nullopt past the end (finished() says whether the stream ended in
  // the round just read).
  std::optional<std::vector<Example>> next() {
    const int64_t world = shard_.world_size, batch = options_.batch_size();
    const int64_t round_size = shard_.split_batches ? batch : batch * world;
    if (finished_) return std::nullopt;
    std::vector<Example> round;
    while (static_cast<int64_t>(round.size()) < round_size) {
      auto example = stream_->next();
      if (!example) break;
      round.push_back(std::move(*example));
    }
    if (static_cast<int64_t>(round.size()) < round_size) {
      finished_ = true;
      if (round.empty() || options_.drop_last()) return std::nullopt;
      if (shard_.even_batches && world > 1) {
        const auto& refill = first_round_.empty() ? round : first_round_;
        const auto real = round.size();
        for (std::size_t i = 0; static_cast<int64_t>(round.size()) < round_size; ++i)
          round.push_back(refill[i % (first_round_.empty() ? real : refill.size())]);
        duplicates_ = round_size - static_cast<int64_t>(real);
      }
    }
    if (first_round_.empty() && shard_.even_batches && world > 1) first_round_ = round;
    return round;
  }
  // Process `rank`'s part of a round of `size` examples, as [begin, end).
  std::pair<int64_t, int64_t> part(int64_t size, int rank) const {
    const int64_t share = shard_.split_batches ? options_.batch_size() / shard_.world_size : options_.batch_size();
    return slice_of_round(size, share, rank);
  }
  bool finished() const { return finished_; }
  int64_t duplicates() const { return duplicates_; }
  int world_size() const { return shard_.world_size; }

 private:
  std::shared_ptr<Dataset> stream_;
  DataLoaderOptions options_;
  Sharding shard_;
  std::vector<Example> first_round_;
  bool finished_ = false;
  int64_t duplicates_ = 0;
};

// This process's batches of a stream that every process reads: each keeps its part of every
// round, so each process skips the others' batches.
template <class Dataset, class Example>
class StreamedBatches {
 public:
  StreamedBatches(std::shared_ptr<Dataset> stream, const DataLoaderOptions& options, const Sharding& shard)
      : rounds_(std::move(stream), options, shard), rank_(shard.rank) {}
  std::optional<std::vector<Example>> next() {
    auto round = rounds_.next();
    if (!round) return std::nullopt;
    const auto [begin, end] = rounds_.part(static_cast<int64_t>(round->size()), rank_);
    if (begin >= end) return std::nullopt;
    return std::vector<Example>(std::make_move_iterator(round->begin() + begin),
                                std::make_move_iterator(round->begin() + end));
  }
  int64_t duplicates() const { return rounds_.duplicates(); }

 private:
  StreamedRounds<Dataset, Example> rounds_;
  int rank_;
};

// Batches made by collating (and placing) what an example source hands out.
template <class Batch, class Examples, class Load>
class LoadedBatches : public BatchSource<Batch> {
 public:
  LoadedBatches(Examples examples, Load load) : examples_(std::move(examples)), load_(std::move(load)) {}
  std::optional<Batch> next() override {
    if (auto examples = examples_.next()) return load_(*examples);
    return std::nullopt;
  }
  int64_t duplicates() const override { return examples_.duplicates(); }

 private:
  Examples examples_;
  Load load_;
};

}  // namespace detail

template <class Dataset, class Collate = DefaultCollate, class Sampler = DefaultOrder>
class DataLoader {
  static_assert(is_sampler_policy_v<Sampler>,
                "acc::DataLoader's Sampler must be a sampler policy such as acc::Sequential or acc::Shuffled: "
                "a type with `static constexpr std::string_view name` and "
                "`static std::vector<int64_t> indices(int64_t size, uint64_t seed, int64_t epoch)`");
  static constexpr bool streaming = detail::is_stream<Dataset>::value;

 public:
  using Example = typename detail::example_of<Dataset>::type;
  using Batch = std::decay_t<decltype(std::declval<const Collate&>()(std::declval<const std::vector<Example>&>()))>;
  using sampler_type = Sampler;

  DataLoader(Dataset dataset, DataLoaderOptions options = {}, Collate collate = {})
      : dataset_(std::make_shared<Dataset>(std::move(dataset))), options_(options), collate_(std::move(collate)) {
    position_->seed = options_.seed();
    if (options_.shuffle() && !std::is_same_v<Sampler, DefaultOrder>)
      throw Error("this DataLoader names its order twice: a sampler policy (" + std::string(Sampler::name) +
                  ") and DataLoaderOptions::shuffle; keep one of them");
    if (streaming && options_.shuffle().value_or(false))
      throw Error(
          "DataLoaderOptions::shuffle(true) on a streaming dataset: a stream is read in its own order; shuffle it "
          "in the dataset, or give the dataset size() and get(i)");
  }

  class iterator {
    using Source = detail::BatchSource<Batch>;

   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = Batch;
    using difference_type = std::ptrdiff_t;
    using pointer = Batch*;
    using reference = Batch&;

    iterator() = default;
    Batch& operator*() { return *current_; }
    Batch* operator->() { return &*current_; }
    iterator& operator++() {
      current_ = std::move(next_);
      next_.reset();
      prefetch();
      report();
      advance_position();
      return *this;
    }
    // Iterators compare equal only when both are exhausted (a single pass, like an input stream).
    bool operator==(const iterator& other) const { return at_end() && other.at_end(); }
    bool operator!=(const iterator& other) const { return !(*this == other); }

   private:
    friend class DataLoader;
    iterator(const DataLoader* loader, std::shared_ptr<Source> source) : loader_(loader), source_(std::move(source)) {
      current_ = source_->next();
      prefetch();
      if (loader_->active_ && !at_end()) progress_ = ActiveLoaders::enter(loader_->active_);
      report();
      advance_position();
    }
    bool at_end() const { return !current_.has_value(); }
    // Starts the next batch's copy to the device while the caller works on the current one.
    void prefetch() {
      if (current_) next_ = source_->next();
    }
    // Past the last batch the iteration is over, and no longer the active one.
    void report() {
      if (at_end()) progress_.reset();
      if (!progress_) return;
      progress_->end_of_dataloader = !next_.has_value();
      progress_->duplicates = source_->duplicates();
    }
    // After the epoch's last batch, the next one is the next epoch's first.
    void advance_position() const {
      auto& position = *loader_->position_;
      if (next_) {
        ++position.batches;
      } else {
        position.epoch = loader_->epochs_->next;
        position.batches = 0;
      }
    }

    const DataLoader* loader_ = nullptr;
    std::shared_ptr<Source> source_;
    std::optional<Batch> current_;
    std::optional<Batch> next_;
    std::shared_ptr<LoaderProgress> progress_;  // while the iteration is under way, in a prepared loader
  };

  // Starts an epoch: the order for the current epoch (a stream's own order), this
  // process's share of it. Each call moves on to the next epoch, so consecutive epochs are
  // shuffled differently; the loader and its copies (skip_first_batches) count epochs together.
  // After Accelerator::load_state, a prepared loader continues at the checkpoint's epoch and batch
  // (and sampler seed), whatever skip_first_batches said.
  iterator begin() {
    auto& epochs = *epochs_;
    if (position_->resume) {
      position_->resume = false;
      epochs.next = position_->epoch;
      skip_ = static_cast<std::size_t>(position_->batches);
    }
    const auto skip = std::exchange(skip_, 0);
    epochs.current = epochs.next++;
    position_->epoch = epochs.current;
    position_->batches = 0;
    const bool main_process = shard_.rank == 0;
    if constexpr (streaming) {
      if (epochs.current > 0) {
        if constexpr (detail::has_reset<Dataset>::value) {
          if (main_process || !dispatching()) dataset_->reset();
        } else {
          throw Error(
              "this streaming dataset has no reset(), so it can be read for one epoch only; add a reset() "
              "that starts it over");
        }
      }
      iterator it(this, dispatching() ? dispatched(main_process ? stream_rounds() : nullptr)
                                      : loaded(detail::StreamedBatches<Dataset, Example>(dataset_, options_, shard_)));
      for (std::size_t i = 0; i < skip && it != end(); ++i) ++it;
      return it;
    } else {
      const auto epoch_order = order(epochs.current);
      const auto skip_in = [&](detail::BatchPlan& plan) {
        const auto skipped = std::min(skip, plan.batches.size());
        plan.batches.erase(plan.batches.begin(), plan.batches.begin() + static_cast<std::ptrdiff_t>(skipped));
        return skipped;
      };
      if (!dispatching()) {
        auto plan = detail::plan_batches(epoch_order, options_, shard_);
        position_->batches = static_cast<int64_t>(skip_in(plan));
        return iterator(this, loaded(detail::PlannedBatches<Dataset, Example>(dataset_, std::move(plan))));
      }
      // The main process plans every process's batches; each process counts what it skipped.
      std::vector<detail::BatchPlan> plans;
      for (int rank = 0; rank < shard_.world_size; ++rank) {
        if (rank != shard_.rank && !main_process) continue;
        auto sharding = shard_;
        sharding.rank = rank;
        plans.push_back(detail::plan_batches(epoch_order, options_, sharding));
        const auto skipped = skip_in(plans.back());
        if (rank == shard_.rank) position_->batches = static_cast<int64_t>(skipped);
      }
      if (!main_process) plans.clear();
      return iterator(this, dispatched(main_process ? planned_rounds(std::move(plans)) : nullptr));
    }
  }
  iterator end() const { return {}; }

  // The epoch the next begin() starts (reshuffles a Shuffled sampler). The epoch a checkpoint
  // resumes (load_state) keeps its position; another one starts from its first batch.
  void set_epoch(int64_t epoch) {
    epochs_->next = epoch;
    if (position_->resume && position_->epoch == epoch) return;
    *position_ = {position_->seed, epoch, 0, false};
  }
  // The epoch of the iteration started last.
  int64_t epoch() const { return epochs_->current; }

  // Batches this process yields in one full epoch (not known for a stream).
  std::size_t size() const {
    if constexpr (streaming) {
      throw Error("a streaming dataset's loader has no size(): the number of batches is known only at its end");
    } else {
      std::vector<int64_t> order(detail::dataset_size(*dataset_));
      return detail::plan_batches(order, options_, shard_).batches.size();
    }
  }

  // A copy whose next epoch starts after its first `count` batches (to resume mid-epoch); it
  // counts epochs with this loader, which goes on with the epoch after.
  DataLoader skip_first_batches(std::size_t count) const {
    DataLoader copy = *this;
    copy.skip_ = count;
    return copy;
  }

  const DataLoaderOptions& options() const { return options_; }
  const Sharding& sharding() const { return shard_; }
  c10::Device device() const { return device_; }
  Dataset& dataset() const { return *dataset_; }
  // Shared with this loader's copies (and, for a prepared loader, its Accelerator).
  const std::shared_ptr<LoaderPosition>& position() const { return position_; }

  // The same loader placed for one process of a job: in the order of DefaultSampler if it names
  // none, with its share of the batches, its device, the seed every process agreed on, and its
  // iterations registered as active.
  struct Placement {
    Sharding sharding;
    c10::Device device;
    uint64_t seed;
    std::shared_ptr<ActiveLoaders> active;
    MainProcessBroadcast broadcast = {};  // dispatch_batches sends the batches through it
  };
  template <class DefaultSampler>
  using placed_sampler = std::conditional_t<std::is_same_v<Sampler, DefaultOrder>, DefaultSampler, Sampler>;
  template <class DefaultSampler>
  DataLoader<Dataset, Collate, placed_sampler<DefaultSampler>> placed(const Placement& placement) const {
    DataLoader<Dataset, Collate, placed_sampler<DefaultSampler>> out(dataset_, options_, collate_);
    out.options_.seed(placement.seed);
    out.shard_ = placement.sharding;
    out.device_ = placement.device;
    out.epochs_->next = epochs_->next;
    *out.position_ = {placement.seed, epochs_->next, 0, false};
    out.active_ = placement.active;
    out.broadcast_ = placement.broadcast;
    if (out.dispatching() && !out.broadcast_.send)
      throw Error("dispatch_batches needs the job's communicator: prepare the loader with Accelerator::prepare");
    if constexpr (!detail::is_tensor_tree_v<Batch>)
      if (out.dispatching())
        throw Error(
            "dispatch_batches sends batches made of tensors (at::Tensor, torch::data::Example, std::vector, "
            "std::pair, std::tuple, std::map<std::string, ...> of them), and this loader's collate returns "
            "something else; turn dispatch_batches off (AcceleratorOptions::dispatch_batches(false)) so that "
            "every process reads its own batches");
    return out;
  }

 private:
  template <class, class, class>
  friend class DataLoader;

  DataLoader(std::shared_ptr<Dataset> dataset, DataLoaderOptions options, Collate collate)
      : dataset_(std::move(dataset)), options_(options), collate_(std::move(collate)) {
    position_->seed = options_.seed();
  }

  // The epoch's order of a map-style dataset: the one DataLoaderOptions::shuffle names, else the
  // sampler's, from the seed the loader and its copies share (a checkpoint's, after load_state).
  std::vector<int64_t> order(int64_t epoch) const {
    const auto size = static_cast<int64_t>(detail::dataset_size(*dataset_));
    const auto seed = position_->seed;
    if (const auto& shuffle = options_.shuffle())
      return *shuffle ? Shuffled::indices(size, seed, epoch) : Sequential::indices(size, seed, epoch);
    return Sampler::indices(size, seed, epoch);
  }

  // Whether the main process reads this loader's batches for every process.
  bool dispatching() const { return shard_.world_size > 1 && shard_.dispatch_batches.value_or(streaming); }

  template <class Examples>
  std::shared_ptr<detail::BatchSource<Batch>> loaded(Examples examples) const {
    auto load = [this](const std::vector<Example>& batch) { return this->load(batch); };
    return std::make_shared<detail::LoadedBatches<Batch, Examples, decltype(load)>>(std::move(examples), load);
  }
  std::shared_ptr<detail::BatchSource<Batch>> dispatched(detail::NextRound<Batch> next_round) const {
    if constexpr (detail::is_tensor_tree_v<Batch>)  // placed() refuses to dispatch other batches
      return std::make_shared<detail::DispatchedBatches<Batch>>(std::move(next_round), broadcast_, shard_.rank,
                                                                shard_.world_size, device_);
    else
      return nullptr;
  }
  // The main process's rounds of a dispatched stream: every process's part, collated.
  detail::NextRound<Batch> stream_rounds() const {
    auto rounds = std::make_shared<detail::StreamedRounds<Dataset, Example>>(dataset_, options_, shard_);
    return [this, rounds]() -> std::optional<detail::CollatedRound<Batch>> {
      auto round = rounds->next();
      if (!round) return std::nullopt;
      detail::CollatedRound<Batch> out{{}, rounds->finished(), rounds->duplicates()};
      for (int rank = 0; rank < shard_.world_size; ++rank) {
        const auto [begin, end] = rounds->part(static_cast<int64_t>(round->size()), rank);
        if (begin < end)
          out.parts.emplace_back(collate_(std::vector<Example>(round->begin() + begin, round->begin() + end)));
        else
          out.parts.emplace_back();
      }
      return out;
    };
  }
  // The main process's rounds of a dispatched random-access dataset, from every process's plan.
  detail::NextRound<Batch> planned_rounds(std::vector<detail::BatchPlan> plans) const {
    std::size_t rounds = 0;
    for (const auto& plan : plans) rounds = std::max(rounds, plan.batches.size());
    return [this, plans = std::move(plans), rounds,
            round = std::size_t{0}]() mutable -> std::optional<detail::CollatedRound<Batch>> {
      if (round == rounds) return std::nullopt;
      detail::CollatedRound<Batch> out{{}, round + 1 == rounds, plans[0].duplicates};
      for (const auto& plan : plans) {
        if (round >= plan.batches.size()) {
          out.parts.emplace_back();
          continue;
        }
        std::vector<Example> examples;
        for (const auto index : plan.batches[round]) examples.push_back(dataset_->get(static_cast<std::size_t>(index)));
        out.parts.emplace_back(collate_(examples));
      }
      ++round;
      return out;
    };
  }

  Batch load(const std::vector<Example>& examples) const {
    Batch batch = collate_(examples);
    // A custom collate may return something other than tensors; placing that is its own business.
    if constexpr (detail::is_tensor_tree_v<Batch>) {
      if (!device_.is_cpu()) {
        const bool async = options_.non_blocking() && device_.is_cuda();
        return detail::map_tensors(batch, [&](const at::Tensor& t) {
          return (async && t.device().is_cpu() ? t.pin_memory() : t).to(device_, /*non_blocking=*/async);
        });
      }
    }
    return batch;
  }

  std::shared_ptr<Dataset> dataset_;
  DataLoaderOptions options_;
  Collate collate_;
  Sharding shard_{};
  c10::Device device_{c10::kCPU};
  // The epoch the next begin() starts and the one started last, shared with this loader's copies.
  struct Epochs {
    int64_t next = 0;
    int64_t current = 0;
  };
  std::shared_ptr<Epochs> epochs_ = std::make_shared<Epochs>();
  std::size_t skip_ = 0;
  std::shared_ptr<ActiveLoaders> active_;  // a prepared loader's Accelerator's
  MainProcessBroadcast broadcast_;         // a prepared loader's, for dispatch_batches
  std::shared_ptr<LoaderPosition> position_ = std::make_shared<LoaderPosition>();
};

template <class Dataset>
DataLoader(Dataset, DataLoaderOptions) -> DataLoader<Dataset>;
template <class Dataset, class Collate>
DataLoader(Dataset, DataLoaderOptions, Collate) -> DataLoader<Dataset, Collate>;

}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/data/impl/dataloader.ipp>
#endif
