// Streaming layers of bitloom's IR (gen/bitloom/ir/layers.py): each reads and writes one
// element per transfer, feature maps in raster order with channels fastest, and computes
// exactly what the layer's `golden` method does. Format traits (bitloom_formats.h) say how
// an element's code decodes to its grid integer; `Req` is the requantizer of an
// accumulating layer: a struct with `code_t` and `static code_t apply(acc, channel)`.
#ifndef BITLOOM_LAYERS_H
#define BITLOOM_LAYERS_H

#include "bitloom_formats.h"
#include "bitloom_stream.h"

namespace bitloom {

// Requantization by thresholds (bitloom.ir.Thresholds): the output is level number
// count(acc >= t) for a rising channel, count(acc <= t) for a falling one; `levels` holds the
// code of every output level, ascending. Exact for any rounding mode and monotone float
// chain the model had, with L comparators and no multiplier.
template <int L, class Code, class Acc, class Thr, class Level>
Code threshold(const Acc& acc, const Thr table[L], bool increasing, const Level levels[L + 1]) {
  BITLOOM_HLS(INLINE)
  int count = 0;
  for (int i = 0; i < L; i++) {
    BITLOOM_HLS(UNROLL)
    count += increasing ? (acc >= table[i]) : (acc <= table[i]);
  }
  return Code(levels[count]);
}

// Requantization by multiply and shift (bitloom.ir.ScaleRequant), proven equal to the
// layer's thresholds: y = acc * M + B is a fixed-point number of S fraction bits; an integer
// output is floor(y / 2^S) (or, TIES_EVEN, the nearest integer, a tie to the even one)
// clipped to [lo, hi]. Y holds y exactly.
template <int S, bool TIES_EVEN, class Code, class Y, class Lim>
Code scale_to_int(const Y& y, const Lim& lo, const Lim& hi) {
  BITLOOM_HLS(INLINE)
  Y q = y >> S;
  if (TIES_EVEN && S > 0) {
    Y dropped = y - (q << S);
    Y half = (Y(1) << S) >> 1;
    if (dropped > half || (dropped == half && q[0])) q += 1;
  }
  if (q < Y(lo)) q = Y(lo);
  if (q > Y(hi)) q = Y(hi);
  return Code(q);
}

// A minifloat output: y clipped to [lo, hi] * 2^S, then the level nearest it (a tie going up,
// or to the level of even code when TIES_EVEN). `mids` are the N - 1 boundaries between the
// N levels in y units, ascending; a binary search of LOG2N steps counts those at or below y.
template <int S, int N, int LOG2N, bool TIES_EVEN, class Code, class Y, class Lim, class Mid,
          class Level>
Code scale_to_levels(const Y& y, const Lim& lo, const Lim& hi, const Mid mids[N - 1],
                     const Level levels[N], const bool even[N]) {
  BITLOOM_HLS(INLINE)
  Y bottom = Y(lo) << S, top = Y(hi) << S;
  Y v = y < bottom ? bottom : (y > top ? top : y);
  int first = 0, last = N - 1;  // the answer lies in [first, last]
  for (int step = 0; step < LOG2N; step++) {
    BITLOOM_HLS(UNROLL)
    if (first < last) {
      int middle = (first + last) / 2;
      if (Y(mids[middle]) <= v) first = middle + 1; else last = middle;
    }
  }
  if (TIES_EVEN && first > 0 && Y(mids[first - 1]) == v && !even[first]) first -= 1;
  return Code(levels[first]);
}

// No requantization (the last layer): the accumulator itself leaves, in format Out.
template <class Out>
struct accumulator_out {
  typedef typename Out::code_t code_t;
  template <class Acc>
  static code_t apply(const Acc& acc, int) {
    return code_t(acc);
  }
};

// Window geometry of a layer (bitloom.ir.Window) as static constants, for sliding_window.
//   struct G { static const int IH, IW, C, KH, KW, SH, SW, PT, PL, DH, DW, OH, OW; };

// im2col: for every output pixel, the KH*KW*C window elements in the order kernel row,
// kernel column, channel; positions in the padding read `pad`. A ring of the last
// (KH-1)*DH+1 input rows is the only storage: rows are read just before the first output
// row that needs them, and rows no window touches are drained at the end.
template <class G, class Fmt>
void sliding_window(hls::stream<typename Fmt::code_t>& in,
                    hls::stream<typename Fmt::code_t>& out, const typename Fmt::code_t pad) {
  const int ROWS = (G::KH - 1) * G::DH + 1;
  typename Fmt::code_t rows[ROWS][G::IW][G::C];
  int loaded = 0;
  for (int oy = 0; oy < G::OH; oy++) {
    const int needed = oy * G::SH - G::PT + (G::KH - 1) * G::DH;
    const int last = needed < G::IH - 1 ? needed : G::IH - 1;
    for (; loaded <= last; loaded++) {
      for (int x = 0; x < G::IW; x++) {
        for (int c = 0; c < G::C; c++) {
          BITLOOM_HLS(PIPELINE II=1)
          rows[loaded % ROWS][x][c] = in.read();
        }
      }
    }
    for (int ox = 0; ox < G::OW; ox++) {
      for (int i = 0; i < G::KH; i++) {
        for (int j = 0; j < G::KW; j++) {
          for (int c = 0; c < G::C; c++) {
            BITLOOM_HLS(PIPELINE II=1)
            const int y = oy * G::SH - G::PT + i * G::DH;
            const int x = ox * G::SW - G::PL + j * G::DW;
            const bool inside = y >= 0 && y < G::IH && x >= 0 && x < G::IW;
            out.write(inside ? rows[y % ROWS][x][c] : pad);
          }
        }
      }
    }
  }
  for (; loaded < G::IH; loaded++) {
    for (int x = 0; x < G::IW * G::C; x++) {
      BITLOOM_HLS(PIPELINE II=1)
      in.read();
    }
  }
}

// acc = x @ weights for each of PIXELS input vectors of K elements (a dense layer, or a
// convolution fed by sliding_window), folded onto PE output channels x SIMD inputs per cycle.
// `weights` holds codes of format Wt (rom_word integers).
template <int K, int N, int PE, int SIMD, int PIXELS, class In, class Wt, class Acc, class Req,
          class Word>
void matrix_vector(hls::stream<typename In::code_t>& in, hls::stream<typename Req::code_t>& out,
                   const Word weights[N][K]) {
  static_assert(K % SIMD == 0 && N % PE == 0, "SIMD must divide K and PE must divide N");
  BITLOOM_HLS(ARRAY_PARTITION variable=weights cyclic factor=PE dim=1)
  BITLOOM_HLS(ARRAY_PARTITION variable=weights cyclic factor=SIMD dim=2)
  for (int px = 0; px < PIXELS; px++) {
    typename In::code_t x[K];
    BITLOOM_HLS(ARRAY_PARTITION variable=x cyclic factor=SIMD)
    for (int k = 0; k < K; k++) {
      BITLOOM_HLS(PIPELINE II=1)
      x[k] = in.read();
    }
    for (int nf = 0; nf < N / PE; nf++) {
      Acc acc[PE];
      BITLOOM_HLS(ARRAY_PARTITION variable=acc complete)
      for (int p = 0; p < PE; p++) {
        BITLOOM_HLS(UNROLL)
        acc[p] = 0;
      }
      for (int sf = 0; sf < K / SIMD; sf++) {
        BITLOOM_HLS(PIPELINE II=1)
        for (int p = 0; p < PE; p++) {
          BITLOOM_HLS(UNROLL)
          for (int s = 0; s < SIMD; s++) {
            BITLOOM_HLS(UNROLL)
            const int k = sf * SIMD + s;
            const typename Wt::code_t w = weights[nf * PE + p][k];
            acc[p] += In::value(x[k]) * Wt::value(w);
          }
        }
      }
      for (int p = 0; p < PE; p++) {
        BITLOOM_HLS(PIPELINE II=1)
        out.write(Req::apply(acc[p], nf * PE + p));
      }
    }
  }
}

// Window reductions over K taps per channel, fed by sliding_window (or a stream already in
// window order): depthwise convolution, sum and max pooling share this loop and differ in
// their Step (static take/finish on a per-channel state).
template <int K, int C, int PIXELS, class Step>
void window_reduce(hls::stream<typename Step::in_t>& in,
                   hls::stream<typename Step::out_t>& out) {
  for (int px = 0; px < PIXELS; px++) {
    typename Step::state_t state[C];
    for (int k = 0; k < K; k++) {
      for (int c = 0; c < C; c++) {
        BITLOOM_HLS(PIPELINE II=1)
        Step::take(state[c], in.read(), k, c);
      }
    }
    for (int c = 0; c < C; c++) {
      BITLOOM_HLS(PIPELINE II=1)
      out.write(Step::finish(state[c], c, px));
    }
  }
}

// Depthwise convolution: acc[c] = sum_k window[k, c] * W::table[k][c].
template <class In, class Wt, class Acc, class Req, class W>
struct depthwise_step {
  typedef typename In::code_t in_t;
  typedef typename Req::code_t out_t;
  typedef Acc state_t;
  static void take(Acc& acc, const in_t& x, int k, int c) {
    const typename Wt::code_t w = W::table[k][c];
    const Acc term = In::value(x) * Wt::value(w);
    acc = k == 0 ? term : Acc(acc + term);
  }
  static out_t finish(const Acc& acc, int c, int) { return Req::apply(acc, c); }
};

// Sum pooling (average pooling: the division is part of the requantization).
template <class In, class Acc, class Req>
struct sum_step {
  typedef typename In::code_t in_t;
  typedef typename Req::code_t out_t;
  typedef Acc state_t;
  static void take(Acc& acc, const in_t& x, int k, int) {
    acc = k == 0 ? Acc(In::value(x)) : Acc(acc + In::value(x));
  }
  static out_t finish(const Acc& acc, int c, int) { return Req::apply(acc, c); }
};

// Average pooling by the count of real pixels (count_include_pad=0): the window sum minus
// the padding's share, times the output pixel's row and column weights (P::rows, P::cols,
// P::OW, P::OFFSET), all positions then dividing alike in the requantization.
template <class In, class Acc, class Req, class P>
struct weighted_sum_step {
  typedef typename In::code_t in_t;
  typedef typename Req::code_t out_t;
  typedef Acc state_t;
  static void take(Acc& acc, const in_t& x, int k, int) {
    acc = k == 0 ? Acc(In::value(x)) : Acc(acc + In::value(x));
  }
  static out_t finish(const Acc& acc, int c, int px) {
    const Acc weighted = Acc(Acc(acc - Acc(P::OFFSET)) * Acc(P::rows[px / P::OW])) *
                         Acc(P::cols[px % P::OW]);
    return Req::apply(weighted, c);
  }
};

// Max pooling on decoded values; the winning code leaves unchanged (same format).
template <class Fmt>
struct max_step {
  typedef typename Fmt::code_t in_t;
  typedef in_t out_t;
  typedef in_t state_t;
  static void take(in_t& best, const in_t& x, int k, int) {
    if (k == 0 || Fmt::value(x) > Fmt::value(best)) best = x;
  }
  static out_t finish(const in_t& best, int, int) { return best; }
};

// Residual add: acc = ka[k] * a + kb[k] * b + bias[k], then max(acc, 0) where RELU. The
// integer multipliers put both branches on one exact grid: one for every channel (KC = 1,
// k = 0) or one per channel (KC = C, k = c: a float island's join); C channels, ELEMS
// elements per frame.
template <int C, int ELEMS, int KC, bool RELU, class A, class B, class Acc, class Req, class W>
void add_streams(hls::stream<typename A::code_t>& a, hls::stream<typename B::code_t>& b,
                 hls::stream<typename Req::code_t>& out, const W ka[KC], const W kb[KC],
                 const W bias[KC]) {
  int c = 0;
  for (int i = 0; i < ELEMS; i++) {
    BITLOOM_HLS(PIPELINE II=1)
    const int k = KC == 1 ? 0 : c;
    Acc acc = Acc(ka[k]) * A::value(a.read()) + Acc(kb[k]) * B::value(b.read()) + Acc(bias[k]);
    if (RELU && acc < 0) acc = 0;
    out.write(Req::apply(acc, c));
    c = c == C - 1 ? 0 : c + 1;
  }
}

// A feature map times one value per channel and frame (bitloom.ir.ChannelScale:
// squeeze-excitation): acc = (x - ZX) * (s[c] - ZS); the frame's C values of s first.
template <int C, int ELEMS, class X, class S, class Acc, class Req>
void channel_scale(hls::stream<typename X::code_t>& x, hls::stream<typename S::code_t>& s,
                   hls::stream<typename Req::code_t>& out, const int zx, const int zs) {
  Acc scale[C];
  for (int c = 0; c < C; c++) {
    BITLOOM_HLS(PIPELINE II=1)
    scale[c] = Acc(S::value(s.read())) - Acc(zs);
  }
  int c = 0;
  for (int i = 0; i < ELEMS; i++) {
    BITLOOM_HLS(PIPELINE II=1)
    const Acc acc = (Acc(X::value(x.read())) - Acc(zx)) * scale[c];
    out.write(Req::apply(acc, c));
    c = c == C - 1 ? 0 : c + 1;
  }
}

// A stream requantized on its own (bitloom.ir.Thresholding): its values are the accumulator.
template <int C, int ELEMS, class In, class Acc, class Req>
void requantize(hls::stream<typename In::code_t>& in, hls::stream<typename Req::code_t>& out) {
  int c = 0;
  for (int i = 0; i < ELEMS; i++) {
    BITLOOM_HLS(PIPELINE II=1)
    out.write(Req::apply(Acc(In::value(in.read())), c));
    c = c == C - 1 ? 0 : c + 1;
  }
}

// An element-wise function as a table (bitloom.ir.Lookup): entry value - LO of every input
// value, holding the output (its value for integer formats, else its code).
template <int ELEMS, int LO, int N, class In, class Out, class W>
void lookup(hls::stream<typename In::code_t>& in, hls::stream<typename Out::code_t>& out,
            const W table[N]) {
  for (int i = 0; i < ELEMS; i++) {
    BITLOOM_HLS(PIPELINE II=1)
    const int index = int(In::value(in.read()).to_int()) - LO;
    out.write(typename Out::code_t(table[index]));
  }
}

// ShuffleNet's channel shuffle (bitloom.ir.ChannelShuffle): output channel k of a pixel is
// input channel (k % G) * (C / G) + k / G.
template <int PIXELS, int C, int G, class T>
void channel_shuffle(hls::stream<T>& in, hls::stream<T>& out) {
  for (int px = 0; px < PIXELS; px++) {
    T pixel[C];
    for (int c = 0; c < C; c++) {
      BITLOOM_HLS(PIPELINE II=1)
      pixel[c] = in.read();
    }
    for (int k = 0; k < C; k++) {
      BITLOOM_HLS(PIPELINE II=1)
      out.write(pixel[(k % G) * (C / G) + k / G]);
    }
  }
}

// Channel concatenation of two streams in one format, pixel by pixel (more inputs chain).
template <int PIXELS, int CA, int CB, class T>
void concat(hls::stream<T>& a, hls::stream<T>& b, hls::stream<T>& out) {
  for (int px = 0; px < PIXELS; px++) {
    for (int c = 0; c < CA + CB; c++) {
      BITLOOM_HLS(PIPELINE II=1)
      out.write(c < CA ? a.read() : b.read());
    }
  }
}

// A fan-out of the DAG: every element to both consumers (more consumers chain).
template <int ELEMS, class T>
void fan_out(hls::stream<T>& in, hls::stream<T>& a, hls::stream<T>& b) {
  for (int i = 0; i < ELEMS; i++) {
    BITLOOM_HLS(PIPELINE II=1)
    const T x = in.read();
    a.write(x);
    b.write(x);
  }
}

}  // namespace bitloom

#endif  // BITLOOM_LAYERS_H
