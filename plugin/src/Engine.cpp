#include "Engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>

namespace dawsep {

namespace {

constexpr size_t kTimingSlots = 1 << 18;  // per-callback timings kept (wraps; ~100 min at 1024)

using Clock = std::chrono::steady_clock;

void waitFor(sem_t* sem, int ms) {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_nsec += (long)ms * 1000000L;
  ts.tv_sec += ts.tv_nsec / 1000000000L;
  ts.tv_nsec %= 1000000000L;
  sem_timedwait(sem, &ts);
}

long jsonInt(const std::string& json, const std::string& key) {  // flat JSON from backend.info()
  auto at = json.find("\"" + key + "\":");
  return at == std::string::npos ? -1 : std::atol(json.c_str() + at + key.size() + 3);
}

template <typename T>
void percentiles(std::vector<T> v, double& median, double& p99, double& worst) {
  median = p99 = worst = 0;
  if (v.empty()) return;
  std::sort(v.begin(), v.end());
  median = v[v.size() / 2];
  p99 = v[std::min(v.size() - 1, (size_t)(0.99 * (double)v.size()))];
  worst = v.back();
}

}  // namespace

Engine::Engine() {
  sem_init(&wake_, 0, 0);
  sem_init(&done_, 0, 0);
  callbackUs_.assign(kTimingSlots, 0.0f);
  workerMs_.assign(kTimingSlots, 0.0f);
  workerLoad_.assign(kTimingSlots, 0.0f);
  workerSamples_.assign(kTimingSlots, 0);
}

Engine::~Engine() {
  stopWorker();
  if (backend_ != nullptr) Runtime::bridge().destroy(backend_);
  sem_destroy(&wake_);
  sem_destroy(&done_);
}

bool Engine::prepare(double sampleRate, int maxBlock, const Config& cfg, std::string& message) {
  stopWorker();
  const Bridge& b = Runtime::bridge();
  char err[4096] = {0};
  char cfgJson[4096];
  char segment[64];  // seconds, 0 for the plugin's default, or "model" (the model's own chunk)
  if (cfg.segmentSeconds < 0) std::snprintf(segment, sizeof segment, "\"model\"");
  else std::snprintf(segment, sizeof segment, "%.9g", cfg.segmentSeconds);
  std::string model;  // JSON-escaped
  for (char ch : cfg.model) {
    if (ch == '"' || ch == '\\') model += '\\';
    model += ch;
  }
  std::snprintf(cfgJson, sizeof cfgJson,
                "{\"sample_rate\": %d, \"model\": %s%s%s, \"segment_seconds\": %s, \"threads\": %d}",
                (int)std::lround(sampleRate), model.empty() ? "null" : "\"", model.c_str(), model.empty() ? "" : "\"",
                segment, cfg.threads);
  if (backend_ != nullptr && backendKey_ == cfgJson) {
    if (b.reset(backend_, err, sizeof err) != 0) {
      message = err;
      return false;
    }
  } else {
    if (backend_ != nullptr) b.destroy(backend_);
    backend_ = b.create(cfgJson, err, sizeof err);
    backendKey_ = backend_ ? cfgJson : "";
    if (backend_ == nullptr) {
      message = err;
      return false;
    }
  }
  maxBlock = std::max(1, maxBlock);
  char info[8192] = {0};
  if (b.info(backend_, cfg.bufferMs, info, sizeof info, err, sizeof err) != 0) {
    message = err;
    return false;
  }
  info_ = info;
  latency_ = (int)jsonInt(info_, "latency_samples");
  buffer_ = (int)jsonInt(info_, "buffer_samples");
  if (latency_ < 0 || buffer_ < 0) {
    message = "the backend's info lacks latency_samples/buffer_samples: " + info_;
    return false;
  }
  sampleRate_ = sampleRate;
  maxChunk_ = std::max(maxBlock, 16384);
  // Room for the worker's head start, a few blocks, and two seconds of a stalled worker.
  size_t frames = (size_t)buffer_ + 4 * (size_t)maxBlock + (size_t)(2 * sampleRate);
  in_.allocate(frames);
  descs_.allocate(std::min<size_t>(frames, 1 << 16));
  out_.allocate(frames + (size_t)buffer_);
  scratchIn_.assign((size_t)maxBlock, Frame2{});
  scratchOut_.assign((size_t)maxBlock, Frame4{});
  dry_.assign(2 * (size_t)latency_, 0.0f);
  dryPos_ = 0;
  prime_ = buffer_;
  owed_ = pushed_ = taken_ = 0;
  expected_ = kNoPosition;
  beforeStart_ = false;
  timeline_ = cfg.timeline;
  resync_ = primedControls_ = false;
  resetRequested_ = failed_ = false;
  while (sem_trywait(&wake_) == 0) {}
  while (sem_trywait(&done_) == 0) {}
  quit_ = false;
  running_ = true;
  worker_ = std::thread(&Engine::run, this);
  return true;
}

void Engine::release() { stopWorker(); }

void Engine::stopWorker() {
  running_ = false;
  if (!worker_.joinable()) return;
  quit_ = true;
  sem_post(&wake_);
  ScopedGilRelease unlocked;  // the worker may need the GIL to finish its call
  worker_.join();
}

void Engine::fail(const std::string& message) {
  {
    std::lock_guard<std::mutex> lock(failureMutex_);
    failure_ = message;
  }
  failed_ = true;
  sem_post(&done_);
  logLine("worker failed, passing audio through: " + message);
  if (onFailure) onFailure(message);
}

std::string Engine::failure() const {
  std::lock_guard<std::mutex> lock(failureMutex_);
  return failure_;
}

void Engine::run() {
  const Bridge& b = Runtime::bridge();
  void* thread = b.threadEnter();
  std::vector<Frame2> in((size_t)maxChunk_);
  std::vector<Frame4> out((size_t)maxChunk_);
  char err[4096];
  while (!quit_) {
    BlockDesc d{}, next{};
    if (!descs_.peek(d)) {
      waitFor(&wake_, 20);
      continue;
    }
    // Blocks that queued up while the worker was busy go to Python in one call.
    size_t count = 1;
    long total = d.n;
    while (descs_.peek(next, count) && !next.reset && next.preset == d.preset && next.effects == d.effects &&
           !d.atOrBefore && !next.atOrBefore &&
           next.position == (d.position == kNoPosition ? kNoPosition : d.position + total) &&
           total + (long)next.n <= maxChunk_) {
      total += next.n;
      ++count;
    }
    descs_.skip(count);
    if (d.reset && b.reset(backend_, err, sizeof err) != 0) {
      fail(err);
      break;
    }
    for (long done = 0; done < total && !quit_;) {
      int k = (int)std::min<long>(total - done, maxChunk_);
      in_.read(in.data(), (size_t)k);  // written before its descriptor, so it is there
      auto t0 = Clock::now();
      const long long position = d.position == kNoPosition ? kNoPosition : (long long)(d.position + done);
      if (b.process(backend_, &in[0].v[0], &out[0].v[0], k, d.preset, d.effects, position, d.atOrBefore, err,
                    sizeof err) != 0) {
        fail(err);
        quit_ = true;
        break;
      }
      double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
      long slot = nWorker_.load() % (long)kTimingSlots;
      workerMs_[(size_t)slot] = (float)ms;
      workerSamples_[(size_t)slot] = k;
      workerLoad_[(size_t)slot] = (float)(ms / (1000.0 * k / sampleRate_));
      nWorker_++;
      workerSamplesTotal_ += k;
      workerTotalMs_.store(workerTotalMs_.load() + ms);  // only this thread writes it
      while (out_.writable() < (size_t)k && !quit_) waitFor(&wake_, 1);  // the host stopped taking
      out_.write(out.data(), (size_t)k);
      done += k;
      sem_post(&done_);
    }
  }
  b.threadExit(thread);
}

bool Engine::takeOutput(int n, bool nonRealtime) {
  Frame4* dst = scratchOut_.data();
  {  // frames of a stream that was reset go as soon as they are there, primed silence or not,
     // so the worker never waits on a ring full of them
    long drop = std::min(owed_, (long)out_.readable());
    out_.skip((size_t)drop);
    owed_ -= drop;
    taken_ += drop;
  }
  long k = std::min<long>(prime_, n);
  std::memset(dst, 0, sizeof(Frame4) * (size_t)k);
  prime_ -= k;
  long need = n - k;
  if (need == 0) return true;
  if (nonRealtime && (long)out_.readable() < owed_ + need) {
    ScopedGilRelease unlocked;  // a Python host may call us holding the GIL the worker needs
    while ((long)out_.readable() < owed_ + need && !failed_) waitFor(&done_, 50);
  }
  if (failed_) return false;
  long avail = (long)out_.readable();
  long drop = std::min(owed_, avail);
  out_.skip((size_t)drop);
  owed_ -= drop;
  taken_ += drop;
  avail -= drop;
  long got = std::min(need, avail);
  out_.read(dst + k, (size_t)got);
  taken_ += got;
  long miss = need - got;
  if (miss > 0) {  // underrun: silence now, the late frames are dropped when they come
    std::memset(dst + k + got, 0, sizeof(Frame4) * (size_t)miss);
    owed_ += miss;
    dropouts_++;
    droppedSamples_ += miss;
  }
  return true;
}

int64_t Engine::inputPosition(int64_t hostPosition) const {
  if (hostPosition == kNoPosition || timeline_ == Config::Timeline::off) return kNoPosition;
  // Ardour reports where a block's output is heard (it compensates our latency by feeding us the
  // input that much earlier); a host that reports the input's own position says timeline = input.
  // (A 0 may be any negative time: JUCE clamps them. The block then carries atOrBefore, and the
  // backend guesses the pre-roll began at 0, fixed by the first real position if wrong.)
  return hostPosition + (timeline_ == Config::Timeline::output ? latency_ : 0);
}

void Engine::process(const float* const* in, float* const* out, int channels, int n, const Controls& c,
                     bool nonRealtime, int64_t hostPosition, bool atOrBeforeZero) {
  if (n > (int)scratchIn_.size()) {  // a host block larger than announced: in pieces
    int step = (int)scratchIn_.size();
    for (int at = 0; at < n; at += step) {
      int k = std::min(step, n - at);
      const float* i2[2] = {in[0] + at, in[channels > 1 ? 1 : 0] + at};
      float* o2[2] = {out[0] + at, out[channels > 1 ? 1 : 0] + at};
      process(i2, o2, channels, k, c, nonRealtime, hostPosition == kNoPosition ? kNoPosition : hostPosition + at,
              atOrBeforeZero && at == 0);
    }
    return;
  }
  const int64_t position = inputPosition(hostPosition);
  auto t0 = Clock::now();
  const float* inR = in[channels > 1 ? 1 : 0];
  for (int i = 0; i < n; ++i) scratchIn_[(size_t)i] = Frame2{{in[0][i], inR[i]}};

  // A position that does not continue the last block: the stream restarts there, in-band. Blocks
  // at or before the start are one stream with whatever real position follows them (the backend
  // checks its guess of where they lay against it).
  const bool beforeStart = position != kNoPosition && atOrBeforeZero;
  bool jump = false;
  if (beforeStart) jump = !beforeStart_;
  else if (position != kNoPosition) jump = !beforeStart_ && position != expected_;
  beforeStart_ = beforeStart;
  expected_ = position == kNoPosition ? kNoPosition : position + n;
  if (position != kNoPosition && !beforeStart) {
    positioned_++;
    int64_t none = kNoPosition;
    firstPosition_.compare_exchange_strong(none, position);
  }
  if (jump) jumps_++;
  if (nonRealtime) nonRealtime_++;
  bool ok = !failed_.load();
  if (ok) {
    bool reset = resetRequested_.exchange(false) || resync_ || jump;
    if (in_.writable() >= (size_t)n && descs_.writable() >= 1) {
      if (reset) {  // in-band: frames queued before it are discarded as they come
        owed_ = pushed_ - taken_;
        prime_ = buffer_;
        resync_ = false;
      }
      const BlockDesc desc{(uint32_t)n, (uint8_t)c.preset, (uint8_t)c.effects, (uint8_t)reset, (uint8_t)beforeStart,
                           position};
      in_.write(scratchIn_.data(), (size_t)n);
      descs_.write(&desc, 1);
      pushed_ += n;
      sem_post(&wake_);
      ok = takeOutput(n, nonRealtime);
    } else {  // the worker is seconds behind: silence, and restart the stream when there is room
      overflows_++;
      resync_ = true;
      std::memset(scratchOut_.data(), 0, sizeof(Frame4) * (size_t)n);
    }
  }

  const float g1 = std::pow(10.0f, c.gainDb / 20.0f), m1 = c.mix, b1 = (ok && !c.bypass) ? 0.0f : 1.0f;
  if (!primedControls_) {
    lastGain_ = g1, lastMix_ = m1, lastBypass_ = b1;
    primedControls_ = true;
  }
  const size_t lat = (size_t)latency_;
  float* outR = out[channels > 1 ? 1 : 0];
  for (int i = 0; i < n; ++i) {
    // Parameters ramp linearly over the block: no zipper noise, exact values when constant.
    const float t = (float)(i + 1) / (float)n;
    const float g = lastGain_ + (g1 - lastGain_) * t, m = lastMix_ + (m1 - lastMix_) * t;
    const float by = lastBypass_ + (b1 - lastBypass_) * t;
    float dl = scratchIn_[(size_t)i].v[0], dr = scratchIn_[(size_t)i].v[1];
    if (lat > 0) {  // the dry signal, delayed like the processed one
      float* slot = &dry_[2 * dryPos_];
      std::swap(dl, slot[0]);
      std::swap(dr, slot[1]);
      dryPos_ = dryPos_ + 1 == lat ? 0 : dryPos_ + 1;
    }
    const Frame4& f = scratchOut_[(size_t)i];
    float l = (1.0f - m) * g * f.v[0] + m * f.v[2];
    float r = (1.0f - m) * g * f.v[1] + m * f.v[3];
    if (by != 0.0f) l = l * (1.0f - by) + dl * by, r = r * (1.0f - by) + dr * by;
    if (channels > 1) {
      out[0][i] = l;
      outR[i] = r;
    } else {
      out[0][i] = 0.5f * (l + r);
    }
  }
  lastGain_ = g1, lastMix_ = m1, lastBypass_ = b1;
  long slot = nCallbacks_.load() % (long)kTimingSlots;
  callbackUs_[(size_t)slot] = (float)std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
  nCallbacks_++;
}

EngineStats Engine::stats() const {
  EngineStats s;
  s.callbacks = nCallbacks_.load();
  s.workerCalls = nWorker_.load();
  s.dropouts = dropouts_.load();
  s.droppedSamples = droppedSamples_.load();
  s.overflows = overflows_.load();
  s.jumps = jumps_.load();
  s.positionedBlocks = positioned_.load();
  s.nonRealtimeBlocks = nonRealtime_.load();
  s.firstPosition = firstPosition_.load() == kNoPosition ? -1 : firstPosition_.load();
  auto firstN = [](const auto& v, long count) {
    return std::vector<typename std::decay_t<decltype(v)>::value_type>(
        v.begin(), v.begin() + std::min<long>(count, (long)v.size()));
  };
  percentiles(firstN(callbackUs_, s.callbacks), s.callbackMedianUs, s.callbackP99Us, s.callbackWorstUs);
  percentiles(firstN(workerMs_, s.workerCalls), s.workerMedianMs, s.workerP99Ms, s.workerWorstMs);
  double p99;
  percentiles(firstN(workerLoad_, s.workerCalls), s.workerMedianLoad, p99, s.workerWorstLoad);
  double medianSamples, unused;
  percentiles(firstN(workerSamples_, s.workerCalls), medianSamples, unused, unused);
  s.workerMedianSamples = (long)medianSamples;
  s.workerTotalMs = workerTotalMs_.load();
  s.audioSeconds = (double)workerSamplesTotal_.load() / sampleRate_;
  return s;
}

void Engine::resetStats() {
  nCallbacks_ = nWorker_ = dropouts_ = droppedSamples_ = overflows_ = workerSamplesTotal_ = jumps_ = positioned_ = 0;
  nonRealtime_ = 0;
  firstPosition_ = kNoPosition;
  workerTotalMs_ = 0;
}

}  // namespace dawsep
