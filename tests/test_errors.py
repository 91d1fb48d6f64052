"""The did-you-mean helper and the located message format."""

from solverkit.errors import ConfigError, did_you_mean


def test_did_you_mean_prefers_a_case_only_difference():
    assert did_you_mean("Adamw", ["SGD", "Adam", "AdamW"]) == " (did you mean 'AdamW'?)"
    assert did_you_mean("kernal_size", ["kernel_size", "pad"]) == \
        " (did you mean 'kernel_size'?)"
    assert did_you_mean("zzz", ["kernel_size", "pad"]) == ""


def test_message_names_file_line_layer_and_field():
    err = ConfigError("unknown field", file="net.yaml", line=7, layer="conv1", layer_index=2,
                      field="kernal_size")
    assert str(err) == "net.yaml:7: layer 'conv1' (#2): field 'kernal_size': unknown field"
    err = ConfigError("bad").located(file="s.yaml", field="base_lr")
    assert str(err) == "s.yaml: field 'base_lr': bad"
