// hls::stream for C simulation with g++, where no Vitis HLS is installed.
//
// Vitis HLS (synthesis, csim and cosim all define __VITIS_HLS__ or __SYNTHESIS__) brings its
// own <hls_stream.h>, which is used unchanged. Everywhere else this std::queue-backed stream
// stands in: it is unbounded, so the layer functions of a DATAFLOW region may run one after
// the other, and a read from an empty stream stops the program naming the stream (a layer
// that consumed more than its producer wrote), instead of returning garbage.
#ifndef BITLOOM_STREAM_H
#define BITLOOM_STREAM_H

#if defined(__SYNTHESIS__) || defined(__VITIS_HLS__)
#include <hls_stream.h>
#else
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <queue>
#include <string>

namespace hls {

template <typename T>
class stream {
 public:
  stream() : name_("unnamed") {}
  explicit stream(const char* name) : name_(name) {}
  stream(const stream&) = delete;
  stream& operator=(const stream&) = delete;

  void write(const T& value) { queue_.push(value); }

  T read() {
    if (queue_.empty()) {
      std::fprintf(stderr, "hls::stream %s: read from an empty stream\n", name_.c_str());
      std::abort();
    }
    T value = queue_.front();
    queue_.pop();
    return value;
  }

  bool empty() const { return queue_.empty(); }
  bool full() const { return false; }
  std::size_t size() const { return queue_.size(); }

 private:
  std::string name_;
  std::queue<T> queue_;
};

}  // namespace hls
#endif
#endif  // BITLOOM_STREAM_H
