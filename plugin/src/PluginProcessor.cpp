#include "PluginProcessor.h"

#include <fstream>

namespace dawsep {

namespace {

juce::AudioProcessorValueTreeState::ParameterLayout layout() {
  using namespace juce;
  AudioProcessorValueTreeState::ParameterLayout l;
  l.add(std::make_unique<AudioParameterChoice>(ParameterID{"preset", 1}, "Preset", Processor::presetNames, 0));
  // 0.1 dB steps: a value typed or automated lands exactly, so renders are reproducible.
  l.add(std::make_unique<AudioParameterFloat>(ParameterID{"stem_gain", 1}, "Stem gain",
                                              NormalisableRange<float>(-48.0f, 12.0f, 0.1f), 0.0f,
                                              AudioParameterFloatAttributes().withLabel("dB")));
  l.add(std::make_unique<AudioParameterFloat>(ParameterID{"mix", 1}, "Mix",
                                              NormalisableRange<float>(0.0f, 100.0f, 0.1f), 0.0f,
                                              AudioParameterFloatAttributes().withLabel("%")));
  l.add(std::make_unique<AudioParameterBool>(ParameterID{"effects", 1}, "Effects", true));
  l.add(std::make_unique<AudioParameterBool>(ParameterID{"bypass", 1}, "Bypass", false));
  return l;
}

}  // namespace

const juce::StringArray Processor::presetNames{"piano", "bass", "drums", "guitar", "other"};

StatusParameter::StatusParameter() : AudioProcessorParameterWithID(juce::ParameterID{"status", 1}, "Status") {}

void StatusParameter::set(Status s, const std::string& detail) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    detail_ = detail;
  }
  code_ = (int)s;
  setValueNotifyingHost(getValue());  // our setValue ignores it; this only tells the host
}

std::string StatusParameter::detail() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return detail_;
}

juce::String StatusParameter::getText(float value, int maximumLength) const {
  int c = juce::jlimit(0, (int)kMax, juce::roundToInt(value * kMax));
  // A host that never applies the plugin's output parameter changes (JUCE's hosting without a
  // running message loop: pedalboard, dawsep-vst3-host) keeps the initial "starting"; its text
  // shows the live status, so such hosts still read what the plugin is doing.
  if (c == (int)Status::starting) c = code_.load();
  juce::String text = statusLabel((Status)c);
  if (c == code_.load()) {
    auto d = detail();
    if (!d.empty()) text << ": " << juce::String(d);
  }
  return maximumLength > 0 ? text.substring(0, maximumLength) : text;
}

Processor::Processor()
    : AudioProcessor(BusesProperties()
                         .withInput("Input", juce::AudioChannelSet::stereo(), true)
                         .withOutput("Output", juce::AudioChannelSet::stereo(), true)),
      state_(*this, nullptr, "dawsep", layout()) {
  preset_ = dynamic_cast<juce::AudioParameterChoice*>(state_.getParameter("preset"));
  gain_ = dynamic_cast<juce::AudioParameterFloat*>(state_.getParameter("stem_gain"));
  mix_ = dynamic_cast<juce::AudioParameterFloat*>(state_.getParameter("mix"));
  effects_ = dynamic_cast<juce::AudioParameterBool*>(state_.getParameter("effects"));
  bypass_ = dynamic_cast<juce::AudioParameterBool*>(state_.getParameter("bypass"));
  auto status = std::make_unique<StatusParameter>();
  status_ = status.get();
  addParameter(status.release());
  engine_.onFailure = [this](const std::string& why) { status_->set(Status::failed, why); };
  // Python is found (or not) now rather than in prepareToPlay, so a host reads the verdict
  // with the parameters' initial values; the model itself loads in prepareToPlay.
  config_ = Config::load();
  Status st = Status::starting;
  std::string message;
  if (Runtime::ensure(config_, st, message))
    setStatus(Status::starting, "Python " + Runtime::pythonVersion() +
                                    (Runtime::pythonHost() ? " (the host's)" : "") + " ready; the model loads on prepare");
  else
    setStatus(st, message);
}

Processor::~Processor() {
  engine_.release();
  writeStats();
}

void Processor::setStatus(Status s, const std::string& detail) {
  status_->set(s, detail);
  std::string line = std::string(statusLabel(s)) + (detail.empty() ? "" : ": " + detail);
  if (line != lastLogged_) {  // hosts re-prepare often (pedalboard: every render); log changes only
    logLine(line);
    lastLogged_ = line;
  }
}

void Processor::prepareToPlay(double sampleRate, int samplesPerBlock) {
  sampleRate_ = sampleRate;
  config_ = Config::load();
  Status st = Status::starting;
  std::string message;
  if (!Runtime::ensure(config_, st, message)) {
    engine_.release();
    setLatencySamples(0);
    setStatus(st, message);
    return;
  }
  if (!engine_.prepare(sampleRate, samplesPerBlock, config_, message)) {
    setLatencySamples(0);
    setStatus(Status::failed, message);
    return;
  }
  setLatencySamples(engine_.latencySamples());
  char detail[512];
  std::snprintf(detail, sizeof detail, "latency %d samples (%.0f ms) = model %d + worker buffer %d; Python %s%s",
                engine_.latencySamples(), 1000.0 * engine_.latencySamples() / sampleRate,
                engine_.modelLatencySamples(), engine_.bufferSamples(), Runtime::pythonVersion().c_str(),
                Runtime::pythonHost() ? " (the host's)" : "");
  std::string text = detail;
  if (!isNonRealtime() && samplesPerBlock > engine_.bufferSamples())  // every block would be late
    text += "; host blocks of " + std::to_string(samplesPerBlock) + " exceed the worker buffer: raise buffer_ms";
  setStatus(Status::running, text);
}

void Processor::releaseResources() {
  engine_.release();
  writeStats();
}

void Processor::writeStats() {
  auto s = engine_.stats();
  if (config_.statsFile.empty() || s.callbacks == 0) return;
  std::ofstream out(config_.statsFile);
  out << "{\"latency_samples\": " << engine_.latencySamples() << ", \"buffer_samples\": " << engine_.bufferSamples()
      << ", \"model_latency_samples\": " << engine_.modelLatencySamples() << ", \"sample_rate\": " << sampleRate_
      << ", \"callbacks\": " << s.callbacks << ", \"callback_median_us\": " << s.callbackMedianUs
      << ", \"callback_p99_us\": " << s.callbackP99Us << ", \"callback_worst_us\": " << s.callbackWorstUs
      << ", \"worker_calls\": " << s.workerCalls << ", \"worker_median_ms\": " << s.workerMedianMs
      << ", \"worker_p99_ms\": " << s.workerP99Ms << ", \"worker_worst_ms\": " << s.workerWorstMs
      << ", \"worker_median_load\": " << s.workerMedianLoad << ", \"worker_worst_load\": " << s.workerWorstLoad
      << ", \"worker_median_samples\": " << s.workerMedianSamples << ", \"worker_total_ms\": " << s.workerTotalMs
      << ", \"audio_seconds\": " << s.audioSeconds << ", \"dropouts\": " << s.dropouts
      << ", \"dropped_samples\": " << s.droppedSamples << ", \"overflows\": " << s.overflows
      << ", \"transport_jumps\": " << s.jumps << ", \"positioned_blocks\": " << s.positionedBlocks
      << ", \"first_position\": " << s.firstPosition << ", \"nonrealtime_blocks\": " << s.nonRealtimeBlocks
      << ", \"backend\": " << (engine_.backendInfo().empty() ? "null" : engine_.backendInfo()) << "}\n";
  engine_.resetStats();
}

bool Processor::isBusesLayoutSupported(const BusesLayout& layouts) const {
  auto in = layouts.getMainInputChannelSet(), out = layouts.getMainOutputChannelSet();
  return in == out && (out == juce::AudioChannelSet::mono() || out == juce::AudioChannelSet::stereo());
}

void Processor::processBlock(juce::AudioBuffer<float>& buffer, juce::MidiBuffer&) {
  juce::ScopedNoDenormals noDenormals;
  const int n = buffer.getNumSamples();
  const int channels = juce::jmin(2, getTotalNumInputChannels());
  for (int c = channels; c < buffer.getNumChannels(); ++c) buffer.clear(c, 0, n);
  if (n == 0 || channels == 0 || !engine_.running()) return;  // not set up: audio passes through
  Controls c;
  c.preset = preset_->getIndex();
  c.effects = effects_->get();
  c.gainDb = gain_->get();
  c.mix = mix_->get() / 100.0f;
  c.bypass = bypass_->get();
  // Where the block lies on the timeline while the transport plays: the model's chunks are cut on
  // the timeline's grid, as `dawsep separate` cuts the track, and a jump restarts the stream.
  int64_t position = kNoPosition;
  bool atOrBeforeZero = false;
  if (auto* head = getPlayHead())
    if (auto info = head->getPosition())
      if (info->getIsPlaying())
        if (auto t = info->getTimeInSamples()) {
          position = *t;
          // JUCE's VST3 wrapper clamps a negative project time (a pre-roll before the timeline's
          // start) to 0. (The musical position is not clamped, but Ardour rounds it to ticks:
          // +-11 samples at 120 BPM, useless for a sample grid.)
          atOrBeforeZero = position == 0;
        }
  engine_.process(buffer.getArrayOfReadPointers(), buffer.getArrayOfWritePointers(), channels, n, c,
                  isNonRealtime() || config_.offline, position, atOrBeforeZero);
}

void Processor::getStateInformation(juce::MemoryBlock& dest) {
  auto tree = state_.copyState();
  tree.setProperty("version", 1, nullptr);
  if (auto xml = tree.createXml()) copyXmlToBinary(*xml, dest);
}

void Processor::setStateInformation(const void* data, int size) {
  auto xml = getXmlFromBinary(data, size);
  if (xml != nullptr && xml->hasTagName(state_.state.getType()))
    state_.replaceState(juce::ValueTree::fromXml(*xml));
}

}  // namespace dawsep

juce::AudioProcessor* JUCE_CALLTYPE createPluginFilter() { return new dawsep::Processor(); }
