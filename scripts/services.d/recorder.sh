# ensure_recorder_test_tools: what the recorder's call tests use besides sipp: espeak-ng speaks
# the two parties' audio, sox turns it into the PCM the tests packetise.
ensure_recorder_test_tools() { ensure_packages sip-tester espeak-ng sox; }
