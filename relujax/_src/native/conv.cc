// relujax native CPU convolution kernels, called from XLA through its FFI.
//
// Stride-1 2-D convolutions of NHWC float32 images with HWIO kernels and explicit zero
// padding (top, left; bottom and right follow from the shapes); xp is x zero-padded:
//   forward / input gradient: y[n,h,w,o] = sum_{i,j,c} xp[n,h+i,w+j,c] * k[i,j,c,o]
//   kernel gradient:          dk[i,j,c,o] = sum_{n,h,w} xp[n,h+i,w+j,c] * g[n,h,w,o]
// Each image is padded into a small per-thread buffer (a few tens of KiB, cache-resident,
// reused across images and calls) before it is used, so no padded copy of the batch is ever
// written to memory.
// 3x3 convolutions whose input channels fill whole vectors run as Winograd F(2x2, 3x3) and
// F(3x3, 2x2) (below) unless the caller asks for the direct ones (attribute `winograd`).
// Register-blocked direct convolutions written with GCC vector extensions, so one source
// compiles to AVX-512, AVX2 or SSE code for the machine it is built on (-march=native).
// Work is shared over XLA's intra-op thread pool. Every output element is computed by one
// thread in a fixed order, so results do not depend on the number of threads or on timing.
#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include <immintrin.h>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

#if defined(__AVX512F__)
constexpr int64_t kLanes = 16;
constexpr int kAcc = 24;       // forward accumulators: 24 of 32 registers
constexpr int kDwChans = 8;     // 8 channels x 2 vectors = 16 accumulators
typedef __m512 vf;
inline vf load(const float* p) { return _mm512_loadu_ps(p); }
inline void store(float* p, vf v) { _mm512_storeu_ps(p, v); }
inline vf splat(float s) { return _mm512_set1_ps(s); }
#elif defined(__AVX__)
constexpr int64_t kLanes = 8;
constexpr int kAcc = 12;  // 12 of 16 registers
constexpr int kDwChans = 4;
typedef __m256 vf;
inline vf load(const float* p) { return _mm256_loadu_ps(p); }
inline void store(float* p, vf v) { _mm256_storeu_ps(p, v); }
inline vf splat(float s) { return _mm256_set1_ps(s); }
#else
constexpr int64_t kLanes = 4;
constexpr int kAcc = 12;
constexpr int kDwChans = 4;
typedef __m128 vf;
inline vf load(const float* p) { return _mm_loadu_ps(p); }
inline void store(float* p, vf v) { _mm_storeu_ps(p, v); }
inline vf splat(float s) { return _mm_set1_ps(s); }
#endif
constexpr int kVecs = 2;     // output-channel vectors per kernel-gradient tile
constexpr int kMaxVecs = 4;  // ... per forward tile (V vectors x kAcc / V pixels)
// (the arithmetic below uses GCC's vector operators on these types; with FMA available
// -ffp-contract=fast, GCC's default, turns a += b * c into one fused multiply-add)
// The loops over a tile's pixels (p, q) and vectors (v) are unrolled in full (#pragma GCC
// unroll), so the accumulators stay in registers: by default GCC unrolls at most 16
// iterations, and the 24-pixel tiles of 16-channel convolutions on AVX-512 kept theirs on
// the stack (a load and a store around every multiply-add).

// Runs fn(item) for item in [0, n_items) on the caller and up to num_threads - 1 pool
// threads. Items are claimed from an atomic counter, so the caller never waits for a pool
// thread that has not started (no deadlock when the pool is busy); tasks that start after
// the work is gone return without touching fn.
template <typename F>
void ParallelFor(ffi::ThreadPool& pool, int64_t n_items, const F& fn) {
  struct State {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
  };
  auto state = std::make_shared<State>();
  const F* f = &fn;
  auto work = [state, n_items, f]() {
    for (int64_t i; (i = state->next.fetch_add(1)) < n_items;) {
      (*f)(i);
      state->done.fetch_add(1, std::memory_order_release);
    }
  };
  int64_t helpers = std::min<int64_t>(pool.num_threads(), n_items) - 1;
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule(decltype(work)(work));
  work();
  while (state->done.load(std::memory_order_acquire) < n_items) std::this_thread::yield();
}

// One output tile: P consecutive pixels of a row x V vectors of output channels.
template <int P, int V>
inline void FwdTile(const float* x, const float* k, float* y, int64_t C, int64_t O,
                    int64_t KH, int64_t KW, int64_t row) {
  vf acc[P][V];
  #pragma GCC unroll 32
  for (int p = 0; p < P; ++p)
    #pragma GCC unroll 32
    for (int v = 0; v < V; ++v) acc[p][v] = vf{};
  for (int64_t i = 0; i < KH; ++i) {
    for (int64_t j = 0; j < KW; ++j) {
      const float* xr = x + i * row + j * C;
      const float* kr = k + (i * KW + j) * C * O;
      for (int64_t c = 0; c < C; ++c) {
        vf kv[V];
        #pragma GCC unroll 32
        for (int v = 0; v < V; ++v) kv[v] = load(kr + c * O + v * kLanes);
        #pragma GCC unroll 32
        for (int p = 0; p < P; ++p) {
          vf xb = splat(xr[p * C + c]);
          #pragma GCC unroll 32
          for (int v = 0; v < V; ++v) acc[p][v] += xb * kv[v];
        }
      }
    }
  }
  #pragma GCC unroll 32
  for (int p = 0; p < P; ++p)
    #pragma GCC unroll 32
    for (int v = 0; v < V; ++v) store(y + p * O + v * kLanes, acc[p][v]);
}

template <int V, int P>
inline void FwdTileN(int n, const float* x, const float* k, float* y, int64_t C, int64_t O,
                     int64_t KH, int64_t KW, int64_t row) {
  if constexpr (P > 0) {
    if (n == P) return FwdTile<P, V>(x, k, y, C, O, KH, KW, row);
    return FwdTileN<V, P - 1>(n, x, k, y, C, O, KH, KW, row);
  }
}

// Output channels [ob, ob + V * kLanes) of one row, in tiles of kAcc / V pixels: the wider
// the channel block, the fewer broadcasts of x per multiply-add.
template <int V>
void FwdBlock(const float* x, const float* k, float* y, int64_t Wo, int64_t C, int64_t O,
              int64_t KH, int64_t KW, int64_t row) {
  constexpr int P = kAcc / V;
  for (int64_t w0 = 0; w0 < Wo; w0 += P) {
    int n = static_cast<int>(std::min<int64_t>(P, Wo - w0));
    FwdTileN<V, P>(n, x + w0 * C, k, y + w0 * O, C, O, KH, KW, row);
  }
}

// One output row (n, h): every output channel block, every pixel.
void FwdRow(const float* x, const float* k, float* y, int64_t Wo, int64_t C, int64_t O,
            int64_t KH, int64_t KW, int64_t row) {
  for (int64_t ob = 0; ob < O;) {
    const int64_t v = std::min<int64_t>(kMaxVecs, (O - ob) / kLanes);
    const float* kb = k + ob;
    float* yb = y + ob;
    switch (v) {
      case 4: FwdBlock<4>(x, kb, yb, Wo, C, O, KH, KW, row); break;
      case 3: FwdBlock<3>(x, kb, yb, Wo, C, O, KH, KW, row); break;
      case 2: FwdBlock<2>(x, kb, yb, Wo, C, O, KH, KW, row); break;
      default: FwdBlock<1>(x, kb, yb, Wo, C, O, KH, KW, row); break;
    }
    ob += v * kLanes;
  }
}

struct Geometry {
  int64_t N, H, W, C, KH, KW, O, Ho, Wo, Hp, Wp, top, left;
};

// Image n of x zero-padded to (Hp, Wp, C), in a buffer of the calling thread that is reused
// while the geometry stays the same: only the interior is rewritten, the zero border stays
// (no memset or allocation per image; the buffer stays warm in the cache).
const float* PaddedImage(const float* x, int64_t n, const Geometry& g) {
  struct Buffer {
    std::vector<float> data;
    std::array<int64_t, 7> key{};
  };
  thread_local Buffer buf;
  const std::array<int64_t, 7> key{g.H, g.W, g.C, g.Hp, g.Wp, g.top, g.left};
  if (buf.key != key || buf.data.empty()) {
    buf.data.assign(g.Hp * g.Wp * g.C, 0.0f);
    buf.key = key;
  }
  const float* src = x + n * g.H * g.W * g.C;
  float* dst = buf.data.data();
  const int64_t w0 = std::max<int64_t>(0, -g.left), w1 = std::min<int64_t>(g.W, g.Wp - g.left);
  for (int64_t h = 0; h < g.H; ++h) {
    const int64_t hp = h + g.top;
    if (hp < 0 || hp >= g.Hp || w1 <= w0) continue;
    std::memcpy(dst + (hp * g.Wp + w0 + g.left) * g.C, src + (h * g.W + w0) * g.C,
                sizeof(float) * (w1 - w0) * g.C);
  }
  return dst;
}

// Checks the shapes: x (N, H, W, C), kernel (KH, KW, C, O), output (N, Ho, Wo, O) with
// Ho = H + top + bottom - KH + 1 for pads in [0, K); O a multiple of the vector width.
std::optional<ffi::Error> Check(const Geometry& g, int64_t bottom, int64_t right) {
  if (g.top < 0 || g.left < 0 || bottom < 0 || right < 0 || g.top >= g.KH ||
      bottom >= g.KH || g.left >= g.KW || right >= g.KW)
    return ffi::Error::InvalidArgument("relujax conv: padding must be in [0, kernel size)");
  if (g.Ho != g.H + g.top + bottom - g.KH + 1 || g.Wo != g.W + g.left + right - g.KW + 1 ||
      g.Ho < 1 || g.Wo < 1)
    return ffi::Error::InvalidArgument("relujax conv: output shape does not match");
  if (g.O % kLanes != 0)
    return ffi::Error::InvalidArgument("relujax conv: output channels not a multiple of the "
                                       "vector width");
  return std::nullopt;
}

// --- Winograd F(2x2, 3x3) --------------------------------------------------------------------
// A 3x3 convolution computed on 2x2 output tiles from 4x4 input tiles (Lavin and Gray, 2016):
// Y = A^T [(G k G^T) . (B^T d B)] A, 16 products per tile and channel pair where the direct
// convolution has 36 (2.25x fewer multiply-adds). The 16 elementwise products summed over the
// input channels are 16 matrix products (tiles x C) (C x O), run by the forward tile above as
// 1x1 convolutions. The transforms only add, subtract and halve (no amplification of rounding
// errors as in larger tiles: the tests hold Winograd and direct to the same 1e-5 of lax's).
//   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 -1 0 1]   G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1]
//   A^T = [1 1 1 0; 0 1 -1 1]
// (Lavin and Gray's B^T with its last row negated, and A^T's last column with it: the same
// results, and the input transform of the kernel gradient below.)

// U[p][c][o] = (G k[., ., c, o] G^T)[p] for the 16 positions p, vectorized over o.
void WinogradKernel(const float* k, float* u, int64_t C, int64_t O) {
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t o = 0; o < O; o += kLanes) {
      vf g[3][3], t[4][3];
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) g[i][j] = load(k + ((i * 3 + j) * C + c) * O + o);
      const vf half = splat(0.5f);
      for (int j = 0; j < 3; ++j) {
        t[0][j] = g[0][j];
        t[1][j] = (g[0][j] + g[1][j] + g[2][j]) * half;
        t[2][j] = (g[0][j] - g[1][j] + g[2][j]) * half;
        t[3][j] = g[2][j];
      }
      for (int a = 0; a < 4; ++a) {
        const vf r[4] = {t[a][0], (t[a][0] + t[a][1] + t[a][2]) * half,
                         (t[a][0] - t[a][1] + t[a][2]) * half, t[a][2]};
        for (int b = 0; b < 4; ++b) store(u + ((a * 4 + b) * C + c) * O + o, r[b]);
      }
    }
  }
}

// Rows [a0, a1) of V = B^T d B for one 4x4 input patch d (at its corner, rows `row` apart),
// vectorized over the input channels: V[a][b] is written at v + (4 (a - a0) + b) stride.
inline void WinogradInput(const float* d, float* v, int64_t row, int64_t C, int64_t stride,
                          int a0, int a1) {
  for (int64_t c = 0; c < C; c += kLanes) {
    vf x[4][4];
    #pragma GCC unroll 4
    for (int r = 0; r < 4; ++r)
      #pragma GCC unroll 4
      for (int s = 0; s < 4; ++s) x[r][s] = load(d + r * row + s * C + c);
    for (int a = a0; a < a1; ++a) {
      vf t[4];
      #pragma GCC unroll 4
      for (int s = 0; s < 4; ++s) {
        t[s] = a == 0 ? x[0][s] - x[2][s]
             : a == 1 ? x[1][s] + x[2][s]
             : a == 2 ? x[2][s] - x[1][s]
                      : x[3][s] - x[1][s];
      }
      float* va = v + (a - a0) * 4 * stride + c;
      store(va + 0 * stride, t[0] - t[2]);
      store(va + 1 * stride, t[1] + t[2]);
      store(va + 2 * stride, t[2] - t[1]);
      store(va + 3 * stride, t[3] - t[1]);
    }
  }
}

// The 2x2 outputs (A^T M A) of one tile, rows/cols past the image's edge left out.
inline void WinogradOutput(const float* m, float* y, int64_t stride, int64_t O, int64_t row,
                           int rows, int cols) {
  for (int64_t o = 0; o < O; o += kLanes) {
    vf a[2][4];
    #pragma GCC unroll 4
    for (int s = 0; s < 4; ++s) {
      const vf m0 = load(m + (0 * 4 + s) * stride + o), m1 = load(m + (1 * 4 + s) * stride + o);
      const vf m2 = load(m + (2 * 4 + s) * stride + o), m3 = load(m + (3 * 4 + s) * stride + o);
      a[0][s] = m0 + m1 + m2;
      a[1][s] = m1 - m2 + m3;
    }
    for (int i = 0; i < rows; ++i) {
      store(y + i * row + o, a[i][0] + a[i][1] + a[i][2]);
      if (cols > 1) store(y + i * row + O + o, a[i][1] - a[i][2] + a[i][3]);
    }
  }
}

// Whether the forward (Winograd F(2x2, 3x3)) and the kernel gradient (F(3x3, 2x2)) run as
// Winograd: a 3x3 kernel and input channels that fill whole vectors (output channels always do).
bool WinogradApplies(int64_t KH, int64_t KW, int64_t C) {
  return KH == 3 && KW == 3 && C % kLanes == 0;
}

// The 2x2 tiles over an output (th_n x tw_n), and the geometry of the padded image extended
// by a zero row / column where Ho / Wo is odd, so that every tile's 4x4 patch lies inside it.
struct Tiling {
  int64_t th_n, tw_n;
  Geometry padded;
};

Tiling Tiles(const Geometry& g) {
  Tiling t{(g.Ho + 1) / 2, (g.Wo + 1) / 2, g};
  t.padded.Hp = 2 * t.th_n + 2;
  t.padded.Wp = 2 * t.tw_n + 2;
  return t;
}

// Tile rows per band: a band's transformed tiles, `floats_per_tile` floats each, stay in L2
// (about 192 KiB).
int64_t BandRows(const Tiling& t, int64_t floats_per_tile) {
  const int64_t per_row = t.tw_n * floats_per_tile * sizeof(float);
  return std::max<int64_t>(1, std::min<int64_t>(t.th_n, (192 << 10) / per_row));
}

// Each position's block of a thread's scratch is padded by one cache line: with power-of-two
// block sizes the 16 blocks a tile reads or writes would fall into one L1 set and evict each
// other. Returns the scratch for `blocks` blocks of `tiles` x `width` floats.
constexpr int64_t kSkew = 16;

float* Blocks(std::vector<float>& buf, int64_t blocks, int64_t tiles, int64_t width) {
  const int64_t need = blocks * (tiles * width + kSkew);
  if (static_cast<int64_t>(buf.size()) < need) buf.resize(need);
  return buf.data();
}

void WinogradImage(const float* img, const float* u, float* yn, const Geometry& g,
                   const Tiling& tiles) {
  const int64_t th_n = tiles.th_n, tw_n = tiles.tw_n;
  const int64_t band = BandRows(tiles, 16 * std::max(g.C, g.O));
  thread_local std::vector<float> vbuf, mbuf;
  float* v = Blocks(vbuf, 16, band * tw_n, g.C);
  float* m = Blocks(mbuf, 16, band * tw_n, g.O);
  const int64_t row = tiles.padded.Wp * g.C;
  for (int64_t b0 = 0; b0 < th_n; b0 += band) {
    const int64_t rows = std::min(band, th_n - b0), T = rows * tw_n;
    const int64_t vs = T * g.C + kSkew, ms = T * g.O + kSkew;  // position strides
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t tw = 0; tw < tw_n; ++tw)
        WinogradInput(img + (2 * (b0 + r)) * row + 2 * tw * g.C, v + (r * tw_n + tw) * g.C,
                      row, g.C, vs, 0, 4);
    for (int p = 0; p < 16; ++p)
      FwdRow(v + p * vs, u + p * g.C * g.O, m + p * ms, T, g.C, g.O, 1, 1, 0);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t h = 2 * (b0 + r);
      const int nr = static_cast<int>(std::min<int64_t>(2, g.Ho - h));
      for (int64_t tw = 0; tw < tw_n; ++tw) {
        const int nc = static_cast<int>(std::min<int64_t>(2, g.Wo - 2 * tw));
        WinogradOutput(m + (r * tw_n + tw) * g.O, yn + (h * g.Wo + 2 * tw) * g.O, ms,
                       g.O, g.Wo * g.O, nr, nc);
      }
    }
  }
}

ffi::Error ConvForward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> k,
                       ffi::ResultBuffer<ffi::F32> y, int64_t top, int64_t bottom,
                       int64_t left, int64_t right, int64_t winograd) {
  auto xd = x.dimensions(), kd = k.dimensions(), yd = y->dimensions();
  if (xd.size() != 4 || kd.size() != 4 || yd.size() != 4 || kd[2] != xd[3] ||
      yd[0] != xd[0] || yd[3] != kd[3])
    return ffi::Error::InvalidArgument("relujax conv: expected NHWC x, HWIO kernel, NHWC y");
  Geometry g{xd[0], xd[1], xd[2], xd[3], kd[0], kd[1], kd[3], yd[1], yd[2],
             xd[1] + top + bottom, xd[2] + left + right, top, left};
  if (auto err = Check(g, bottom, right)) return *err;
  const float* xs = x.typed_data();
  const float* ks = k.typed_data();
  float* ys = y->typed_data();
  if (winograd != 0 && WinogradApplies(g.KH, g.KW, g.C)) {
    const Tiling tiles = Tiles(g);
    std::vector<float> u(16 * g.C * g.O);
    WinogradKernel(ks, u.data(), g.C, g.O);
    ParallelFor(pool, g.N, [&](int64_t n) {
      WinogradImage(PaddedImage(xs, n, tiles.padded), u.data(), ys + n * g.Ho * g.Wo * g.O, g,
                    tiles);
    });
    return ffi::Error::Success();
  }
  ParallelFor(pool, g.N, [&](int64_t n) {
    const float* img = PaddedImage(xs, n, g);
    for (int64_t h = 0; h < g.Ho; ++h)
      FwdRow(img + h * g.Wp * g.C, ks, ys + ((n * g.Ho + h) * g.Wo) * g.O, g.Wo, g.C,
             g.O, g.KH, g.KW, g.Wp * g.C);
  });
  return ffi::Error::Success();
}

// Kernel-gradient tile: Q input channels x V vectors of output channels, at one kernel offset,
// accumulated over every pixel of one image.
template <int Q, int V>
inline void DwTile(const float* x, const float* g, float* dk, int64_t C, int64_t O,
                   int64_t Ho, int64_t Wo, int64_t row) {
  vf acc[Q][V];
  #pragma GCC unroll 32
  for (int q = 0; q < Q; ++q)
    #pragma GCC unroll 32
    for (int v = 0; v < V; ++v) acc[q][v] = load(dk + q * O + v * kLanes);
  for (int64_t h = 0; h < Ho; ++h) {
    const float* xr = x + h * row;
    const float* gr = g + h * Wo * O;
    for (int64_t w = 0; w < Wo; ++w) {
      vf gv[V];
      #pragma GCC unroll 32
      for (int v = 0; v < V; ++v) gv[v] = load(gr + w * O + v * kLanes);
      #pragma GCC unroll 32
      for (int q = 0; q < Q; ++q) {
        vf xb = splat(xr[w * C + q]);
        #pragma GCC unroll 32
        for (int v = 0; v < V; ++v) acc[q][v] += xb * gv[v];
      }
    }
  }
  #pragma GCC unroll 32
  for (int q = 0; q < Q; ++q)
    #pragma GCC unroll 32
    for (int v = 0; v < V; ++v) store(dk + q * O + v * kLanes, acc[q][v]);
}

template <int V, int Q = kDwChans>
inline void DwTileN(int n, const float* x, const float* g, float* dk, int64_t C, int64_t O,
                    int64_t Ho, int64_t Wo, int64_t row) {
  if constexpr (Q > 0) {
    if (n == Q) return DwTile<Q, V>(x, g, dk, C, O, Ho, Wo, row);
    return DwTileN<V, Q - 1>(n, x, g, dk, C, O, Ho, Wo, row);
  }
}

// q input channels x every output channel of dk, in tiles of kVecs vectors (one vector last).
inline void DwChannels(int q, const float* x, const float* g, float* dk, int64_t C, int64_t O,
                       int64_t Ho, int64_t Wo, int64_t row) {
  for (int64_t ob = 0; ob < O; ob += kVecs * kLanes) {
    if (ob + kVecs * kLanes <= O) {
      DwTileN<kVecs>(q, x, g + ob, dk + ob, C, O, Ho, Wo, row);
    } else {
      DwTileN<1>(q, x, g + ob, dk + ob, C, O, Ho, Wo, row);
    }
  }
}

// --- Winograd F(3x3, 2x2) for the kernel gradient ---------------------------------------------
// dk[i,j] = sum_{h,w} xp[h+i, w+j] g[h, w] is a correlation of the padded input with the
// cotangent that yields a 3x3 result: over each 2x2 block of g and its 4x4 input patch it is
// F(3x3, 2x2), dk += A^T [(G g G^T) . (B^T d B)] A, 16 products per block and channel pair where
// the direct sum has 36. The 16 products summed over blocks and images are 16 matrix products
// (C x blocks) (blocks x O), run by the kernel-gradient tile above.
//   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 -1 0 1]   G = [1 0; .5 .5; .5 -.5; 0 1]
//   A^T = [1 1 1 0; 0 1 -1 0; 0 1 1 1]

// Rows [a0, a1) of G g G^T for one 2x2 block of the cotangent (rows / columns past the edge
// are zeros), vectorized over the output channels.
inline void WinogradDwGrad(const float* g, float* v, int64_t row, int64_t O, int64_t stride,
                           int rows, int cols, int a0, int a1) {
  const vf half = splat(0.5f);
  for (int64_t o = 0; o < O; o += kLanes) {
    vf x[2][2];
    for (int r = 0; r < 2; ++r)
      for (int s = 0; s < 2; ++s)
        x[r][s] = (r < rows && s < cols) ? load(g + r * row + s * O + o) : vf{};
    for (int a = a0; a < a1; ++a) {
      vf t[2];
      for (int s = 0; s < 2; ++s) {
        t[s] = a == 0 ? x[0][s]
             : a == 1 ? (x[0][s] + x[1][s]) * half
             : a == 2 ? (x[0][s] - x[1][s]) * half
                      : x[1][s];
      }
      float* va = v + (a - a0) * 4 * stride + o;
      store(va + 0 * stride, t[0]);
      store(va + 1 * stride, (t[0] + t[1]) * half);
      store(va + 2 * stride, (t[0] - t[1]) * half);
      store(va + 3 * stride, t[1]);
    }
  }
}

// The kernel gradient as F(3x3, 2x2). Parts own rows of positions (a of (a, b)), so every
// position's sum is taken by one thread over the images and blocks in a fixed order.
void WinogradKernelGrad(ffi::ThreadPool& pool, const float* xs, const float* gs, float* dk,
                        const Geometry& g) {
  const Tiling tiles = Tiles(g);
  const int64_t th_n = tiles.th_n, tw_n = tiles.tw_n;
  const int64_t C = g.C, O = g.O;
  std::vector<float> msum(16 * C * O, 0.0f);
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), 4));
  ParallelFor(pool, parts, [&](int64_t part) {
    const int a0 = static_cast<int>(4 * part / parts), a1 = static_cast<int>(4 * (part + 1) / parts);
    const int na = a1 - a0;
    const int64_t band = BandRows(tiles, 4 * na * (C + O));
    thread_local std::vector<float> vbuf, gbuf;
    float* v = Blocks(vbuf, 4 * na, band * tw_n, C);  // this part's positions only
    float* u = Blocks(gbuf, 4 * na, band * tw_n, O);
    const int64_t row = tiles.padded.Wp * C;
    const int64_t cblocks = (C + kDwChans - 1) / kDwChans;
    for (int64_t n = 0; n < g.N; ++n) {
      const float* img = PaddedImage(xs, n, tiles.padded);
      const float* gn = gs + n * g.Ho * g.Wo * O;
      for (int64_t b0 = 0; b0 < th_n; b0 += band) {
        const int64_t rows = std::min(band, th_n - b0), T = rows * tw_n;
        const int64_t vs = T * C + kSkew, us = T * O + kSkew;  // position strides
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t h = 2 * (b0 + r);
          const int nr = static_cast<int>(std::min<int64_t>(2, g.Ho - h));
          for (int64_t tw = 0; tw < tw_n; ++tw) {
            const int64_t t = r * tw_n + tw;
            const int nc = static_cast<int>(std::min<int64_t>(2, g.Wo - 2 * tw));
            WinogradInput(img + h * row + 2 * tw * C, v + t * C, row, C, vs, a0, a1);
            WinogradDwGrad(gn + (h * g.Wo + 2 * tw) * O, u + t * O, g.Wo * O, O, us, nr, nc,
                           a0, a1);
          }
        }
        for (int p = 0; p < 4 * na; ++p) {
          const float* vp = v + p * vs;
          const float* up = u + p * us;
          float* mp = msum.data() + (a0 * 4 + p) * C * O;
          for (int64_t cb = 0; cb < cblocks; ++cb) {
            const int64_t c0 = cb * kDwChans;
            const int q = static_cast<int>(std::min<int64_t>(kDwChans, C - c0));
            DwChannels(q, vp + c0, up, mp + c0 * O, C, O, 1, T, 0);
          }
        }
      }
    }
  });
  // dk[i, j] = (A^T M A)[i, j], vectorized over the output channels.
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t o = 0; o < O; o += kLanes) {
      vf m[4][4], t[3][4];
      for (int a = 0; a < 4; ++a)
        for (int b = 0; b < 4; ++b) m[a][b] = load(msum.data() + ((a * 4 + b) * C + c) * O + o);
      for (int b = 0; b < 4; ++b) {
        t[0][b] = m[0][b] + m[1][b] + m[2][b];
        t[1][b] = m[1][b] - m[2][b];
        t[2][b] = m[1][b] + m[2][b] + m[3][b];
      }
      for (int i = 0; i < 3; ++i) {
        const vf r[3] = {t[i][0] + t[i][1] + t[i][2], t[i][1] - t[i][2],
                         t[i][1] + t[i][2] + t[i][3]};
        for (int j = 0; j < 3; ++j) store(dk + ((i * 3 + j) * C + c) * O + o, r[j]);
      }
    }
  }
}

ffi::Error ConvKernelGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                          ffi::Buffer<ffi::F32> gy, ffi::ResultBuffer<ffi::F32> dk, int64_t top,
                          int64_t bottom, int64_t left, int64_t right, int64_t winograd) {
  auto xd = x.dimensions(), gd = gy.dimensions(), kd = dk->dimensions();
  if (xd.size() != 4 || gd.size() != 4 || kd.size() != 4 || gd[0] != xd[0] ||
      kd[2] != xd[3] || kd[3] != gd[3])
    return ffi::Error::InvalidArgument("relujax conv: expected NHWC x and g, HWIO kernel");
  Geometry g{xd[0], xd[1], xd[2], xd[3], kd[0], kd[1], kd[3], gd[1], gd[2],
             xd[1] + top + bottom, xd[2] + left + right, top, left};
  if (auto err = Check(g, bottom, right)) return *err;
  const float* xs = x.typed_data();
  const float* gs = gy.typed_data();
  float* out = dk->typed_data();
  if (winograd != 0 && WinogradApplies(g.KH, g.KW, g.C)) {
    WinogradKernelGrad(pool, xs, gs, out, g);
    return ffi::Error::Success();
  }
  std::memset(out, 0, sizeof(float) * g.KH * g.KW * g.C * g.O);
  // Tiles (kernel offset, channel block); each part owns a contiguous range of tiles and
  // loops over the images outermost, so every dk element is summed over the images in the
  // same order whatever the number of parts (results independent of the thread count).
  const int64_t cblocks = (g.C + kDwChans - 1) / kDwChans;
  const int64_t tiles = g.KH * g.KW * cblocks;
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), tiles));
  const int64_t row = g.Wp * g.C;
  ParallelFor(pool, parts, [&](int64_t part) {
    const int64_t t0 = tiles * part / parts, t1 = tiles * (part + 1) / parts;
    for (int64_t n = 0; n < g.N; ++n) {
      const float* img = PaddedImage(xs, n, g);
      const float* gn = gs + n * g.Ho * g.Wo * g.O;
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t ij = t / cblocks, c0 = (t % cblocks) * kDwChans;
        const int64_t i = ij / g.KW, j = ij % g.KW;
        const int q = static_cast<int>(std::min<int64_t>(kDwChans, g.C - c0));
        const float* xt = img + i * row + j * g.C + c0;
        float* d = out + (ij * g.C + c0) * g.O;
        DwChannels(q, xt, gn, d, g.C, g.O, g.Ho, g.Wo, row);
      }
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(RelujaxConvForward, ConvForward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("top")
                                  .Attr<int64_t>("bottom")
                                  .Attr<int64_t>("left")
                                  .Attr<int64_t>("right")
                                  .Attr<int64_t>("winograd"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(RelujaxConvKernelGrad, ConvKernelGrad,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("top")
                                  .Attr<int64_t>("bottom")
                                  .Attr<int64_t>("left")
                                  .Attr<int64_t>("right")
                                  .Attr<int64_t>("winograd"));

extern "C" int64_t RelujaxConvLanes() { return kLanes; }
