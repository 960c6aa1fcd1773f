// dispatch_batches (Accelerate's DataLoaderConfiguration option): the main process alone reads
// the dataset, collates every process's batch, and sends them; the other processes never touch
// the dataset. Each round is one broadcast of a layout (the batches' structure, dtypes and
// shapes) and one of their bytes, so batches of any tensor tree, with shapes that differ between
// processes, arrive exactly as each process would have collated them itself.
#pragma once

#include <acc/detail/tensor_tree.hpp>
#include <acc/error.hpp>

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace acc {

// The loader's link to its job's communicator: sends the main process's tensor to every process,
// in place, on `device`. Accelerator::prepare sets it.
struct MainProcessBroadcast {
  std::function<void(at::Tensor&)> send;
  c10::Device device{c10::kCPU};
};

namespace detail {

// Where a loader's iteration takes its batches from.
template <class Batch>
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  virtual std::optional<Batch> next() = 0;
  virtual int64_t duplicates() const = 0;  // samples repeated across all processes to even out
};

// One round of a dispatched loader, as the main process collated it.
template <class Batch>
struct CollatedRound {
  std::vector<std::optional<Batch>> parts;  // by rank; empty for a process without a batch
  bool last = false;                        // no round follows
  int64_t duplicates = 0;
};

// Reads the next round on the main process; empty past the end.
template <class Batch>
using NextRound = std::function<std::optional<CollatedRound<Batch>>()>;

// A batch's structure as int64s: a vector's length, a map's keys, each tensor's dtype and sizes;
// its tensors, contiguous on the CPU, in the same order. read_layout builds the structure back
// from it, in that order (for_each_tensor's order is the compiler's order of constructor
// arguments, which may differ).
template <class T>
void write_layout(const T& value, std::vector<int64_t>& out, std::vector<at::Tensor>& tensors) {
  if constexpr (std::is_same_v<T, at::Tensor>) {
    out.push_back(static_cast<int64_t>(value.scalar_type()));
    out.push_back(value.dim());
    for (const auto size : value.sizes()) out.push_back(size);
    tensors.push_back(value.cpu().contiguous());
  } else if constexpr (is_example<T>::value) {
    write_layout(value.data, out, tensors);
    if constexpr (!std::is_same_v<typename T::TargetType, torch::data::example::NoTarget>)
      write_layout(value.target, out, tensors);
  } else if constexpr (is_vector<T>::value) {
    out.push_back(static_cast<int64_t>(value.size()));
    for (const auto& item : value) write_layout(item, out, tensors);
  } else if constexpr (is_string_map<T>::value) {
    out.push_back(static_cast<int64_t>(value.size()));
    for (const auto& [key, item] : value) {
      out.push_back(static_cast<int64_t>(key.size()));
      for (const char c : key) out.push_back(static_cast<unsigned char>(c));
      write_layout(item, out, tensors);
    }
  } else {  // pair or tuple
    std::apply([&](const auto&... items) { (write_layout(items, out, tensors), ...); }, value);
  }
}

// A pair's or tuple's fields, read in order.
template <class A, class B, class Take>
std::pair<A, B> read_fields(const std::vector<int64_t>& in, std::size_t& pos, Take& take, std::pair<A, B>*);
template <class... Ts, class Take>
std::tuple<Ts...> read_fields(const std::vector<int64_t>& in, std::size_t& pos, Take& take, std::tuple<Ts...>*);

// `take(dtype, sizes)` hands out the next tensor of the payload.
template <class T, class Take>
T read_layout(const std::vector<int64_t>& in, std::size_t& pos, Take& take) {
  const auto next = [&] {
    if (pos >= in.size()) throw Error("dispatch_batches: the main process sent a batch layout that ends early");
    return in[pos++];
  };
  if constexpr (std::is_same_v<T, at::Tensor>) {
    const auto dtype = static_cast<at::ScalarType>(next());
    std::vector<int64_t> sizes(static_cast<std::size_t>(next()));
    for (auto& size : sizes) size = next();
    return take(dtype, sizes);
  } else if constexpr (is_example<T>::value) {
    // Braced initialisation reads the fields in order.
    if constexpr (std::is_same_v<typename T::TargetType, torch::data::example::NoTarget>)
      return T{read_layout<typename T::DataType>(in, pos, take)};
    else
      return T{read_layout<typename T::DataType>(in, pos, take), read_layout<typename T::TargetType>(in, pos, take)};
  } else if constexpr (is_vector<T>::value) {
    T out(static_cast<std::size_t>(next()));
    for (auto& item : out) item = read_layout<typename T::value_type>(in, pos, take);
    return out;
  } else if constexpr (is_string_map<T>::value) {
    T out;
    for (auto count = next(); count > 0; --count) {
      std::string key(static_cast<std::size_t>(next()), '\0');
      for (auto& c : key) c = static_cast<char>(next());
      auto item = read_layout<typename T::mapped_type>(in, pos, take);
      out.emplace(std::move(key), std::move(item));
    }
    return out;
  } else {
    return read_fields(in, pos, take, static_cast<T*>(nullptr));
  }
}

// Braced initialisation reads the fields in order.
template <class A, class B, class Take>
std::pair<A, B> read_fields(const std::vector<int64_t>& in, std::size_t& pos, Take& take, std::pair<A, B>*) {
  return {read_layout<A>(in, pos, take), read_layout<B>(in, pos, take)};
}
template <class... Ts, class Take>
std::tuple<Ts...> read_fields(const std::vector<int64_t>& in, std::size_t& pos, Take& take, std::tuple<Ts...>*) {
  return std::tuple<Ts...>{read_layout<Ts>(in, pos, take)...};
}

// The batches of a dispatched loader, on every process: the main process reads rounds through
// `next_round`, the others receive their part. Every process makes the same broadcasts until the
// round marked last, so a process without a batch in that round stops without a collective.
template <class Batch>
class DispatchedBatches : public BatchSource<Batch> {
 public:
  // `next_round` is the main process's only.
  DispatchedBatches(NextRound<Batch> next_round, MainProcessBroadcast channel, int rank, int world_size,
                    c10::Device device)
      : next_round_(std::move(next_round)),
        channel_(std::move(channel)),
        rank_(rank),
        world_size_(world_size),
        device_(device) {}

  std::optional<Batch> next() override {
    if (finished_) return std::nullopt;
    // Layout: [round follows, last round, duplicates, then per rank: has a batch, its layout].
    std::vector<int64_t> layout;
    std::vector<at::Tensor> tensors;
    std::optional<Batch> mine;
    if (rank_ == 0) {
      auto round = next_round_();
      layout = {round ? 1 : 0, round ? static_cast<int64_t>(round->last) : 1, round ? round->duplicates : 0};
      if (round) {
        if (static_cast<int>(round->parts.size()) != world_size_)
          throw Error("dispatch_batches: a round has " + std::to_string(round->parts.size()) + " parts for " +
                      std::to_string(world_size_) + " processes");
        for (const auto& part : round->parts) {
          layout.push_back(part.has_value());
          if (!part) continue;
          write_layout(*part, layout, tensors);
        }
        mine = std::move(round->parts[0]);
      }
    }
    layout = send_layout(std::move(layout));
    duplicates_ = layout[2];
    finished_ = layout[0] == 0 || layout[1] != 0;
    if (layout[0] == 0) return std::nullopt;
    // Every process walks the whole layout: the payload's tensors lie in rank order.
    at::Tensor payload;
    std::size_t pos = 3;
    int64_t offset = 0;
    int64_t mine_begin = 0;
    auto measure = [&](at::ScalarType dtype, const std::vector<int64_t>& sizes) {
      offset += byte_size(dtype, sizes);
      return at::Tensor();
    };
    bool has_mine = false;
    for (int r = 0; r < world_size_; ++r) {
      if (pos >= layout.size()) throw Error("dispatch_batches: the main process sent a batch layout that ends early");
      if (!layout[pos++]) continue;
      if (r == rank_) {
        has_mine = true;
        mine_begin = offset;
        mine_layout_ = pos;
      }
      read_layout<Batch>(layout, pos, measure);
    }
    payload =
        rank_ == 0 ? pack(tensors, offset) : at::empty({offset}, at::TensorOptions(channel_.device).dtype(at::kByte));
    channel_.send(payload);
    if (!has_mine) return std::nullopt;
    if (rank_ == 0) return detail::map_tensors(*mine, [&](const at::Tensor& t) { return t.to(device_); });
    int64_t at_byte = mine_begin;
    auto take = [&](at::ScalarType dtype, const std::vector<int64_t>& sizes) {
      const auto bytes = byte_size(dtype, sizes);
      auto piece = payload.narrow(0, at_byte, bytes).clone();  // its own storage, aligned for any dtype
      at_byte += bytes;
      return (bytes == 0 ? at::empty(sizes, at::TensorOptions(channel_.device).dtype(dtype))
                         : piece.view(dtype).reshape(sizes))
          .to(device_);
    };
    pos = mine_layout_;
    return read_layout<Batch>(layout, pos, take);
  }
  int64_t duplicates() const override { return duplicates_; }

 private:
  static int64_t byte_size(at::ScalarType dtype, const std::vector<int64_t>& sizes) {
    int64_t n = static_cast<int64_t>(c10::elementSize(dtype));
    for (const auto size : sizes) n *= size;
    return n;
  }
  // The main process's layout on every process (its length first, then the values).
  std::vector<int64_t> send_layout(std::vector<int64_t> layout) {
    auto options = at::TensorOptions(channel_.device).dtype(at::kLong);
    auto length = at::empty({1}, at::kLong);
    length.data_ptr<int64_t>()[0] = static_cast<int64_t>(layout.size());
    length = length.to(channel_.device);
    channel_.send(length);
    const auto count = length.cpu().data_ptr<int64_t>()[0];
    auto values = at::empty({count}, at::kLong);
    if (rank_ == 0 && count > 0) std::memcpy(values.data_ptr(), layout.data(), layout.size() * sizeof(int64_t));
    values = values.to(options.device());
    channel_.send(values);
    values = values.cpu();
    return std::vector<int64_t>(values.data_ptr<int64_t>(), values.data_ptr<int64_t>() + count);
  }
  // The round's tensors side by side as bytes, on the channel's device.
  at::Tensor pack(const std::vector<at::Tensor>& tensors, int64_t total) const {
    auto bytes = at::empty({total}, at::kByte);
    auto* out = static_cast<char*>(bytes.data_ptr());
    for (const auto& t : tensors) {
      if (t.nbytes() > 0) std::memcpy(out, t.data_ptr(), t.nbytes());
      out += t.nbytes();
    }
    return bytes.to(channel_.device);
  }

  NextRound<Batch> next_round_;
  MainProcessBroadcast channel_;
  int rank_;
  int world_size_;
  c10::Device device_;
  bool finished_ = false;
  int64_t duplicates_ = 0;
  std::size_t mine_layout_ = 0;
};

}  // namespace detail
}  // namespace acc
