// Number formats of bitloom's IR as C++ traits: what a stream carries (the code) and the exact
// integer it stands for (the grid integer: value = n * 2**-FRAC_BITS, as in
// bitloom.formats.Format.to_grid). Every layer computes on grid integers, so products and sums
// are exact integer arithmetic for every format, minifloats included (an exact "Kulisch"
// accumulator); rounding happens only in the threshold requantizer.
#ifndef BITLOOM_FORMATS_H
#define BITLOOM_FORMATS_H

// The open ap_types headers trip g++'s -Wuninitialized inside their own constructors once
// inlined at -O2; silence that for their code only, so -Wall still judges ours.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <ap_int.h>
#pragma GCC diagnostic pop

#include <stdint.h>

#include <type_traits>

// HLS pragmas are spelled BITLOOM_HLS(PIPELINE II=1): Vitis HLS sees `#pragma HLS ...`; g++
// (whose -Wunknown-pragmas cannot be silenced by a diagnostic pragma before GCC 13) sees
// nothing.
#if defined(__SYNTHESIS__) || defined(__VITIS_HLS__)
#define BITLOOM_PRAGMA(text) _Pragma(#text)
#define BITLOOM_HLS(directive) BITLOOM_PRAGMA(HLS directive)
#else
#define BITLOOM_HLS(directive)
#endif

namespace bitloom {

// The word of a constant table (weights, thresholds, output levels) of W-bit integers. In
// synthesis it is the exact ap_int, which sizes the ROM; in C simulation it is the smallest
// standard integer holding W bits (ap_int beyond 64), because g++ spends seconds
// initializing tables of ap_int elements one constructor call at a time. Either way the
// values are the same and every use converts them to an exact ap_int type first.
template <int W, bool SIGNED>
struct rom_word {
#if defined(__SYNTHESIS__) || defined(__VITIS_HLS__)
  typedef typename std::conditional<SIGNED, ap_int<W>, ap_uint<W> >::type type;
#else
  template <class S, class U>
  struct pick {
    typedef typename std::conditional<SIGNED, S, U>::type type;
  };
  typedef typename std::conditional<
      (W <= 8), typename pick<int8_t, uint8_t>::type,
      typename std::conditional<
          (W <= 16), typename pick<int16_t, uint16_t>::type,
          typename std::conditional<
              (W <= 32), typename pick<int32_t, uint32_t>::type,
              typename std::conditional<(W <= 64), typename pick<int64_t, uint64_t>::type,
                                        typename pick<ap_int<W>, ap_uint<W> >::type>::type>::
              type>::type>::type type;
#endif
};

// Integers and fixed point: the code is the two's-complement (or unsigned) grid integer.
template <int W, bool SIGNED>
struct int_format {
  typedef typename std::conditional<SIGNED, ap_int<W>, ap_uint<W> >::type code_t;
  typedef code_t value_t;
  static value_t value(const code_t& code) { return code; }
  static bool finite(const code_t&) { return true; }
};

// 1-bit signed integers are bipolar: code 0 is -1, code 1 is +1 (FINN's convention).
struct bipolar_format {
  typedef ap_uint<1> code_t;
  typedef ap_int<2> value_t;
  static value_t value(const code_t& code) { return code ? value_t(1) : value_t(-1); }
  static bool finite(const code_t&) { return true; }
};

// Which codes of a minifloat are not numbers (bitloom.formats.minifloat.SPECIALS).
enum specials_policy { FINITE = 0, FN = 1, FNUZ = 2, IEEE = 3 };

// [sign] E exponent bits, M mantissa bits. With subnormals, field 0 is m * 2**(1-BIAS-M) and
// field e >= 1 is (2**M + m) * 2**(e-BIAS-M); without them every field is a normal binade.
// value() is the exact significand shifted by its exponent, in units of the smallest
// subnormal: an integer of at most MAG_BITS bits (plus sign). BIAS fixes only where the
// binary point of that integer sits (FRAC_BITS), so it does not enter the decoding.
template <int E, int M, int BIAS, bool SUBNORMALS, int SPECIALS, bool SIGNED>
struct minifloat {
  static const int BITS = int(SIGNED) + E + M;
  static const int FRAC_BITS = BIAS + M - int(SUBNORMALS);
  static const int MAG_BITS = M + (1 << E) - int(SUBNORMALS);
  typedef ap_uint<BITS> code_t;
  typedef typename std::conditional<SIGNED, ap_int<MAG_BITS + 1>, ap_uint<MAG_BITS> >::type
      value_t;

  static value_t value(const code_t& code) {
    BITLOOM_HLS(INLINE)
    const unsigned long long raw = code.to_uint64();
    const unsigned long long m = raw & ((1ULL << M) - 1);
    const int e = int((raw >> M) & ((1ULL << E) - 1));
    ap_uint<MAG_BITS> magnitude = m;
    if (!SUBNORMALS) {
      magnitude = ap_uint<MAG_BITS>((1ULL << M) | m) << e;
    } else if (e != 0) {
      magnitude = ap_uint<MAG_BITS>((1ULL << M) | m) << (e - 1);
    }
    const bool negative = SIGNED && ((raw >> (E + M)) & 1);
    return negative ? value_t(-value_t(magnitude)) : value_t(magnitude);
  }

  // False for the NaN/inf codes of the policy: they are not values a grid integer can hold.
  static bool finite(const code_t& code) {
    const unsigned long long raw = code.to_uint64();
    const unsigned long long ones = (1ULL << (E + M)) - 1;
    switch (SPECIALS) {
      case FN:
        return (raw & ones) != ones;
      case FNUZ:
        return raw != (1ULL << (BITS - 1));
      case IEEE:
        return ((raw >> M) & ((1ULL << E) - 1)) != (1ULL << E) - 1;
      default:
        return true;
    }
  }
};

}  // namespace bitloom

#endif  // BITLOOM_FORMATS_H
