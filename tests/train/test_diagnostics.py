import cnnlab
from cnnlab.analysis.gradients import flags_for, read_gradients

FAST = [
    "data.name=synthetic",
    "data.num_train=256",
    "data.num_test=64",
    "train.batch_size=32",
    "train.device=cpu",
    "train.diagnostics=true",
]


def test_gradient_flow_records_every_layer_every_epoch(tmp_path):
    res = cnnlab.fit(
        overrides=FAST + ["model.activation=sigmoid"],
        epochs=2,
        runs_dir=str(tmp_path),
        name="g",
        quiet=True,
    )
    rows = read_gradients(res.run_dir)
    assert [r["epoch"] for r in rows] == [1, 2]
    names = [d["name"] for d in rows[0]["layers"]]
    assert names[0] == "features.0" and names[-1] == "classifier"
    for d in rows[-1]["layers"]:
        assert d["grad_norm"] > 0 and 0 < d["update_ratio"] < 1
    # the trainer may run max-pool before the activation (an exact speed rewrite), so the
    # first conv block's sigmoid sits at features.1 or features.2
    first = next(d for d in rows[-1]["activations"] if d["name"] in ("features.1", "features.2"))
    assert first["type"] == "Sigmoid"
    assert 0 < first["mean"] < 1 and 0 <= first["saturation"] <= 1


def test_flags():
    def layers(*g):
        return [{"grad_norm": v} for v in g]

    assert flags_for(layers(1e-3, 0.1, 1.0))[0].startswith("vanishing")
    assert flags_for(layers(1e3, 1.0, 1.0))[0].startswith("exploding")
    assert flags_for(layers(float("nan"), 1.0))[0].startswith("exploding")
    assert flags_for(layers(0.1, 0.5, 1.0)) == []
