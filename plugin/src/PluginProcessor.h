// The JUCE layer: parameters, state, bus layouts, and the status a host shows. The audio work is
// Engine's; the Python side is Runtime's.
#pragma once

#include <juce_audio_processors/juce_audio_processors.h>

#include "Engine.h"

namespace dawsep {

// Read-only (a meter in JUCE's terms, kIsReadOnly in VST3): what the plugin is doing and, for the
// current value, why; e.g. "passthrough: no Python environment: set DAWSEP_PYTHON_ENV ...".
class StatusParameter : public juce::AudioProcessorParameterWithID {
 public:
  StatusParameter();
  void set(Status s, const std::string& detail);
  Status status() const { return (Status)code_.load(); }
  std::string detail() const;

  float getValue() const override { return (float)code_.load() / kMax; }
  void setValue(float) override {}  // hosts cannot change it
  float getDefaultValue() const override { return 0.0f; }
  int getNumSteps() const override { return (int)kMax + 1; }
  bool isDiscrete() const override { return true; }
  bool isAutomatable() const override { return false; }
  Category getCategory() const override { return otherMeter; }  // a meter: read-only to the host
  juce::String getText(float value, int maximumLength) const override;
  float getValueForText(const juce::String&) const override { return getValue(); }

 private:
  static constexpr float kMax = (float)Status::failed;
  std::atomic<int> code_{0};
  mutable std::mutex mutex_;
  std::string detail_;
};

class Processor : public juce::AudioProcessor {
 public:
  static const juce::StringArray presetNames;  // must match dawsep.plugin_backend.PRESETS

  Processor();
  ~Processor() override;

  void prepareToPlay(double sampleRate, int samplesPerBlock) override;
  void releaseResources() override;
  void reset() override { engine_.requestReset(); }
  bool isBusesLayoutSupported(const BusesLayout& layouts) const override;
  void processBlock(juce::AudioBuffer<float>&, juce::MidiBuffer&) override;
  using AudioProcessor::processBlock;

  juce::AudioProcessorEditor* createEditor() override { return new juce::GenericAudioProcessorEditor(*this); }
  bool hasEditor() const override { return true; }
  const juce::String getName() const override { return "dawsep"; }
  bool acceptsMidi() const override { return false; }
  bool producesMidi() const override { return false; }
  double getTailLengthSeconds() const override { return 0.0; }
  int getNumPrograms() override { return 1; }
  int getCurrentProgram() override { return 0; }
  void setCurrentProgram(int) override {}
  const juce::String getProgramName(int) override { return {}; }
  void changeProgramName(int, const juce::String&) override {}
  void getStateInformation(juce::MemoryBlock& dest) override;
  void setStateInformation(const void* data, int size) override;
  juce::AudioProcessorParameter* getBypassParameter() const override { return bypass_; }

 private:
  void setStatus(Status s, const std::string& detail);
  void writeStats();

  juce::AudioProcessorValueTreeState state_;
  StatusParameter* status_ = nullptr;
  juce::AudioParameterChoice* preset_ = nullptr;
  juce::AudioParameterFloat *gain_ = nullptr, *mix_ = nullptr;
  juce::AudioParameterBool *effects_ = nullptr, *bypass_ = nullptr;
  Engine engine_;
  Config config_;
  double sampleRate_ = 44100;
  std::string lastLogged_;

  JUCE_DECLARE_NON_COPYABLE_WITH_LEAK_DETECTOR(Processor)
};

}  // namespace dawsep
