// bitloom's HLS header library: number formats, the hls::stream C-simulation stand-in and
// the streaming layer templates the generated kernels instantiate.
#ifndef BITLOOM_H
#define BITLOOM_H
#include "bitloom_formats.h"
#include "bitloom_layers.h"
#include "bitloom_stream.h"
#endif  // BITLOOM_H
