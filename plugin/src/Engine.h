// The real-time engine of one plugin instance, free of JUCE so it can be reasoned about alone.
//
// Audio thread (process): copies the block into the input FIFO with a small descriptor (length,
// preset, effects, reset), wakes the worker, and takes the same number of processed frames from
// the output FIFO: never a lock, an allocation or a Python call. The worker thread runs the
// Python backend (dawsep.plugin_backend) on whatever has arrived and fills the output FIFO.
//
// Timeline: each block carries where its input lies on the host's timeline (kNoPosition when the
// transport is stopped or the host gives no play head); a position that does not follow the
// previous block (a locate, a loop, the start of a bounce) restarts the stream in-band there, and
// the backend cuts its model chunks on the timeline's grid, as `dawsep separate` cuts the track.
//
// Latency: the output stream starts with `buffer` samples of silence (the worker's head start)
// and the backend's own output is delayed by its `model latency`, so the declared latency is
// their sum and never moves. Real time: a frame the worker has not produced in time is output as
// silence (a dropout, counted) and the late frame is discarded when it comes. Non-real time
// (offline bounce, pedalboard): the audio thread waits for the worker instead, so the output is
// exactly the backend's, delayed by the declared latency.
#pragma once

#include <semaphore.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "Runtime.h"
#include "SpscRing.h"

namespace dawsep {

constexpr int64_t kNoPosition = DSB_NO_POSITION;  // a block's timeline position is unknown

struct Frame2 { float v[2]; };
struct Frame4 { float v[4]; };  // isolate L, R, remove L, R
struct BlockDesc {
  uint32_t n;
  uint8_t preset, effects, reset, atOrBefore;  // atOrBefore: `position` or anywhere before it
  int64_t position;  // the block's first sample on the host's timeline, or kNoPosition
};

struct Controls {  // parameter values for one block, read by the audio thread from the host
  int preset = 0;
  bool effects = true;
  float gainDb = 0.0f;
  float mix = 0.0f;  // 0 isolate .. 1 remove
  bool bypass = false;
};

struct EngineStats {
  long dropouts = 0, droppedSamples = 0, overflows = 0, callbacks = 0, workerCalls = 0;
  long jumps = 0, positionedBlocks = 0;  // transport jumps (stream restarts); blocks with a position
  long nonRealtimeBlocks = 0;            // blocks the host marked offline (a bounce)
  int64_t firstPosition = -1;            // input position of the first positioned block (-1: none)
  double callbackMedianUs = 0, callbackWorstUs = 0, callbackP99Us = 0;
  double workerMedianMs = 0, workerWorstMs = 0, workerP99Ms = 0, workerMedianLoad = 0, workerWorstLoad = 0;
  long workerMedianSamples = 0;
  double workerTotalMs = 0, audioSeconds = 0;  // worker CPU over the audio it processed
};

class Engine {
 public:
  Engine();
  ~Engine();

  // Host thread, never concurrent with process(): build (or reuse and reset) the backend for
  // this rate and config, size the FIFOs, start the worker. False with a message on failure.
  bool prepare(double sampleRate, int maxBlock, const Config& cfg, std::string& message);
  void release();  // stop the worker (the backend is kept for the next prepare)
  bool running() const { return running_.load(); }

  int latencySamples() const { return latency_; }
  int bufferSamples() const { return buffer_; }
  int modelLatencySamples() const { return latency_ - buffer_; }
  const std::string& backendInfo() const { return info_; }

  // Audio thread. `in`/`out` may alias (JUCE's in-place buffer); channels 1 or 2. `hostPosition`:
  // the play head's position while the transport plays (its meaning: Config::timeline), else
  // kNoPosition; `atOrBeforeZero`: the host said 0, which JUCE also reports for any negative time.
  void process(const float* const* in, float* const* out, int channels, int n, const Controls& c,
               bool nonRealtime, int64_t hostPosition = kNoPosition, bool atOrBeforeZero = false);
  void requestReset() { resetRequested_.store(true); }  // any thread; applied in-band

  std::function<void(const std::string&)> onFailure;  // called on the worker thread

  bool failed() const { return failed_.load(); }
  std::string failure() const;
  EngineStats stats() const;  // not on the audio thread
  void resetStats();

 private:
  void run();
  int64_t inputPosition(int64_t hostPosition) const;
  void stopWorker();
  void fail(const std::string& message);
  bool takeOutput(int n, bool nonRealtime);

  // Set by prepare, read by both threads while running.
  int latency_ = 0, buffer_ = 0, maxChunk_ = 16384;
  double sampleRate_ = 44100;
  void* backend_ = nullptr;
  std::string backendKey_, info_;

  SpscRing<Frame2> in_;
  SpscRing<BlockDesc> descs_;
  SpscRing<Frame4> out_;
  sem_t wake_{}, done_{};
  std::thread worker_;
  std::atomic<bool> quit_{false}, running_{false}, failed_{false}, resetRequested_{false};
  mutable std::mutex failureMutex_;
  std::string failure_;

  // Audio-thread state.
  long prime_ = 0;      // silence still owed before the worker's first frame of this stream
  long owed_ = 0;       // frames to discard when they arrive (late after a dropout, or pre-reset)
  long pushed_ = 0, taken_ = 0;  // frames into the worker / out of the output FIFO since prepare
  bool resync_ = false;
  int64_t expected_ = kNoPosition;  // the input position that continues the last block
  bool beforeStart_ = false;         // the last block was at or before the timeline's start
  Config::Timeline timeline_ = Config::Timeline::output;
  std::vector<Frame2> scratchIn_;
  std::vector<Frame4> scratchOut_;
  std::vector<float> dry_;  // delay line of the input by the latency (bypass, failure)
  size_t dryPos_ = 0;
  float lastGain_ = 1, lastMix_ = 0, lastBypass_ = 0;
  bool primedControls_ = false;

  // Timing (written by one thread each, read after the fact).
  std::vector<float> callbackUs_, workerMs_, workerLoad_;
  std::vector<int> workerSamples_;
  std::atomic<long> nCallbacks_{0}, nWorker_{0}, dropouts_{0}, droppedSamples_{0}, overflows_{0};
  std::atomic<long> jumps_{0}, positioned_{0}, nonRealtime_{0};
  std::atomic<int64_t> firstPosition_{kNoPosition};
  std::atomic<long> workerSamplesTotal_{0};
  std::atomic<double> workerTotalMs_{0};
};

}  // namespace dawsep
