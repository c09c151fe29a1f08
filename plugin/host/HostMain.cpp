// dawsep-vst3-host: a small command-line VST3 host with no Python in it, built with the same
// JUCE as the plugin. It renders a file through a plugin the way a DAW would (raw output, the
// latency not compensated), offline or paced in real time, and prints what the plugin reports.
//
//   dawsep-vst3-host PLUGIN.vst3 [--in IN.wav --out OUT.wav] [--block N] [--set NAME=VALUE]...
//                    [--load-state F] [--save-state F] [--realtime] [--seconds S] [--no-tail]
//                    [--position P [--preroll N]]
//
// OUT holds IN (looped or cut to --seconds when given) followed by the reported latency's worth
// of silence pushed through, so it contains the whole delayed signal. A JSON report goes to
// stdout. Exit 0 whenever the plugin loaded and the file rendered, whatever the plugin did.
//
// Without --position the host has no play head (as pedalboard). With it, the transport plays IN
// from timeline sample P the way Ardour bounces it: the play head reports where each block's
// output is heard (its input's position minus the declared latency, so negative during the first
// latency's worth of blocks when P is 0); --preroll first feeds N samples of silence with the
// transport stopped (Ardour's export pre-roll), whose output is not written.
#include <juce_audio_formats/juce_audio_formats.h>
#include <juce_audio_processors/juce_audio_processors.h>

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

namespace {

int usage(const char* why) {
  std::fprintf(stderr,
               "dawsep-vst3-host: %s\nusage: dawsep-vst3-host PLUGIN.vst3 [--in IN.wav --out OUT.wav] [--block N] "
               "[--set NAME=VALUE]... [--load-state F] [--save-state F] [--realtime] [--seconds S] [--no-tail]\n",
               why);
  return 2;
}

// The transport: stopped, or playing at `position` (the next block's first sample).
struct Transport : juce::AudioPlayHead {
  bool playing = false;
  int64_t position = 0;
  double rate = 44100;
  juce::Optional<PositionInfo> getPosition() const override {
    PositionInfo info;
    info.setIsPlaying(playing);
    info.setTimeInSamples(position);
    info.setTimeInSeconds((double)position / rate);
    return info;
  }
};

juce::String normalise(const juce::String& s) { return s.toLowerCase().replaceCharacter(' ', '_'); }

juce::AudioProcessorParameter* findParameter(juce::AudioProcessor& p, const juce::String& name) {
  for (auto* param : p.getParameters())
    if (normalise(param->getName(512)) == normalise(name)) return param;
  return nullptr;
}

juce::var parameterList(juce::AudioProcessor& p) {
  juce::Array<juce::var> list;
  for (auto* param : p.getParameters()) {
    auto* o = new juce::DynamicObject();
    o->setProperty("name", param->getName(512));
    o->setProperty("label", param->getLabel());
    o->setProperty("text", param->getCurrentValueAsText());
    o->setProperty("raw_value", param->getValue());
    o->setProperty("automatable", param->isAutomatable());
    list.add(juce::var(o));
  }
  return list;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage("no plugin given");
  juce::String pluginPath = argv[1], inPath, outPath, loadState, saveState;
  int block = 512;
  double seconds = 0;
  bool transport = false;
  int64_t position = 0, preroll = 0;
  bool realtime = false, tail = true;
  juce::StringArray sets;
  for (int i = 2; i < argc; ++i) {
    juce::String a = argv[i];
    auto value = [&]() -> juce::String { return i + 1 < argc ? juce::String(argv[++i]) : juce::String(); };
    if (a == "--in") inPath = value();
    else if (a == "--out") outPath = value();
    else if (a == "--block") block = value().getIntValue();
    else if (a == "--set") sets.add(value());
    else if (a == "--load-state") loadState = value();
    else if (a == "--save-state") saveState = value();
    else if (a == "--seconds") seconds = value().getDoubleValue();
    else if (a == "--realtime") realtime = true;
    else if (a == "--no-tail") tail = false;
    else if (a == "--position") transport = true, position = value().getLargeIntValue();
    else if (a == "--preroll") preroll = value().getLargeIntValue();
    else return usage(("unknown option " + a).toRawUTF8());
  }
  if (block < 1) return usage("--block must be >= 1");
  if (preroll < 0 || (preroll > 0 && !transport)) return usage("--preroll needs --position and must be >= 0");
  if (inPath.isEmpty() != outPath.isEmpty()) return usage("--in and --out go together");

  juce::ScopedJuceInitialiser_GUI juce;  // a message manager: JUCE's VST3 hosting needs one
  juce::AudioFormatManager formats;
  formats.registerBasicFormats();

  juce::AudioBuffer<float> input(2, 0);
  double rate = 44100;
  if (inPath.isNotEmpty()) {
    std::unique_ptr<juce::AudioFormatReader> reader(formats.createReaderFor(juce::File::getCurrentWorkingDirectory().getChildFile(inPath)));
    if (reader == nullptr) return usage(("cannot read " + inPath).toRawUTF8());
    rate = reader->sampleRate;
    int n = (int)reader->lengthInSamples, chans = (int)std::min<unsigned>(2, reader->numChannels);
    juce::AudioBuffer<float> file(chans, n);
    reader->read(&file, 0, n, 0, true, chans > 1);
    int total = seconds > 0 ? (int)std::lround(seconds * rate) : n;
    input.setSize(2, total);
    for (int at = 0; at < total && n > 0; at += n)  // loop the file up to --seconds
      for (int c = 0; c < 2; ++c) input.copyFrom(c, at, file, std::min(c, chans - 1), 0, std::min(n, total - at));
  }

  juce::AudioPluginFormatManager pluginFormats;
  pluginFormats.addFormat(new juce::VST3PluginFormat());
  juce::OwnedArray<juce::PluginDescription> types;
  juce::String fullPath = juce::File::getCurrentWorkingDirectory().getChildFile(pluginPath).getFullPathName();
  pluginFormats.getFormat(0)->findAllTypesForFile(types, fullPath);
  if (types.isEmpty()) return usage(("no VST3 plugin in " + pluginPath).toRawUTF8());
  juce::String error;
  auto plugin = pluginFormats.createPluginInstance(*types[0], rate, block, error);
  if (plugin == nullptr) return usage(("cannot load " + pluginPath + ": " + error).toRawUTF8());

  auto layout = plugin->getBusesLayout();
  layout.getMainInputChannelSet() = juce::AudioChannelSet::stereo();
  layout.getMainOutputChannelSet() = juce::AudioChannelSet::stereo();
  plugin->setBusesLayout(layout);

  if (loadState.isNotEmpty()) {
    juce::MemoryBlock data;
    if (!juce::File::getCurrentWorkingDirectory().getChildFile(loadState).loadFileAsData(data))
      return usage(("cannot read " + loadState).toRawUTF8());
    plugin->setStateInformation(data.getData(), (int)data.getSize());
  }
  for (auto& s : sets) {
    auto name = s.upToFirstOccurrenceOf("=", false, false), text = s.fromFirstOccurrenceOf("=", false, false);
    auto* param = findParameter(*plugin, name);
    if (param == nullptr) return usage(("no parameter " + name).toRawUTF8());
    param->setValueNotifyingHost(param->getValueForText(text));
  }

  Transport head;
  head.rate = rate;
  if (transport) plugin->setPlayHead(&head);
  plugin->setNonRealtime(!realtime);
  // JUCE's VST3 hosting reads the latency before activating the plugin, and the plugin only
  // knows it once activated (prepareToPlay loads the model); a DAW takes the plugin's
  // restartComponent(kLatencyChanged) on its message loop. We have none running, so we
  // activate twice: the second activation reads the latency the first one set.
  plugin->prepareToPlay(rate, block);
  plugin->releaseResources();
  plugin->prepareToPlay(rate, block);
  const int latency = plugin->getLatencySamples();

  // A DAW's audio thread runs at real-time priority; so does ours when paced (best effort: it
  // needs root or an rtprio limit), so the timings measure the plugin rather than the scheduler.
  bool rtPriority = false;
  if (realtime) {
    sched_param sp{};
    sp.sched_priority = std::min(70, sched_get_priority_max(SCHED_FIFO));
    rtPriority = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) == 0;
  }
  std::vector<double> callbackMs;
  int n = input.getNumSamples(), total = n + (tail ? latency : 0);
  juce::AudioBuffer<float> output(2, total);
  if (outPath.isNotEmpty()) {
    juce::AudioBuffer<float> buf(2, block);
    juce::MidiBuffer midi;
    callbackMs.reserve((size_t)(total / block + 1));
    for (int64_t at = 0; at < preroll; at += block) {  // transport stopped: nothing is written
      buf.setSize(2, (int)std::min<int64_t>(block, preroll - at), false, false, true);
      buf.clear();
      plugin->processBlock(buf, midi);
    }
    head.playing = true;
    auto start = std::chrono::steady_clock::now();
    for (int at = 0, k = 0; at < total; at += block, ++k) {
      head.position = position + at - latency;  // where this block's output is heard
      int m = std::min(block, total - at);
      buf.setSize(2, m, false, false, true);
      for (int c = 0; c < 2; ++c) {
        buf.clear(c, 0, m);
        if (at < n) buf.copyFrom(c, 0, input, c, at, std::min(m, n - at));
      }
      if (realtime)  // a sound card's pace: block k is due k blocks after the start
        std::this_thread::sleep_until(start + std::chrono::duration<double>(k * (double)block / rate));
      auto t0 = std::chrono::steady_clock::now();
      plugin->processBlock(buf, midi);
      callbackMs.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      for (int c = 0; c < 2; ++c) output.copyFrom(c, at, buf, c, 0, m);
    }
    juce::File outFile = juce::File::getCurrentWorkingDirectory().getChildFile(outPath);
    outFile.deleteFile();
    std::unique_ptr<juce::FileOutputStream> stream(outFile.createOutputStream());
    juce::WavAudioFormat wav;
    std::unique_ptr<juce::AudioFormatWriter> writer(
        stream ? wav.createWriterFor(stream.get(), rate, 2, 32, {}, 0) : nullptr);
    if (writer == nullptr) return usage(("cannot write " + outPath).toRawUTF8());
    stream.release();  // the writer owns it now
    writer->writeFromAudioSampleBuffer(output, 0, total);
  }

  auto* report = new juce::DynamicObject();
  report->setProperty("plugin", plugin->getName());
  report->setProperty("latency_samples", latency);
  report->setProperty("sample_rate", rate);
  report->setProperty("block", block);
  report->setProperty("realtime", realtime);
  report->setProperty("rt_priority", rtPriority);
  report->setProperty("input_samples", n);
  report->setProperty("output_samples", outPath.isNotEmpty() ? total : 0);
  report->setProperty("parameters", parameterList(*plugin));
  if (auto* status = findParameter(*plugin, "Status")) report->setProperty("status", status->getCurrentValueAsText());
  if (!callbackMs.empty()) {
    auto worst = std::max_element(callbackMs.begin(), callbackMs.end());
    report->setProperty("callback_worst_block", (int)(worst - callbackMs.begin()));
    std::sort(callbackMs.begin(), callbackMs.end());
    report->setProperty("callback_median_ms", callbackMs[callbackMs.size() / 2]);
    report->setProperty("callback_p99_ms", callbackMs[std::min(callbackMs.size() - 1, callbackMs.size() * 99 / 100)]);
    report->setProperty("callback_worst_ms", callbackMs.back());
  }
  if (saveState.isNotEmpty()) {
    juce::MemoryBlock data;
    plugin->getStateInformation(data);
    juce::File::getCurrentWorkingDirectory().getChildFile(saveState).replaceWithData(data.getData(), data.getSize());
  }
  plugin->releaseResources();
  std::printf("%s\n", juce::JSON::toString(juce::var(report), true).toRawUTF8());
  plugin.reset();
  return 0;
}
