"""Transfer of adversarial images between models."""
import torch
from torch import nn

import seethrough
from seethrough.adversarial.transfer import predict, transfer_matrix, transfer_summary


def test_the_diagonal_is_the_white_box_success_and_models_are_counted_on_their_right_images():
    world = seethrough.ConceptWorld("val", length=16).batch()
    models = {"honest": seethrough.load_model("conceptnet"),
              "cheater": seethrough.load_model("conceptnet_cheater")}
    frame = transfer_matrix(models, world["image"], world["label"], ["fgsm", "pgd"], eps=8 / 255)
    assert len(frame) == 2 * 2 * 2 and frame.fooled.between(0, 1).all()
    honest = frame[(frame.target == "honest")].usable.iloc[0]
    assert honest == int((predict(models["honest"], world["image"]) == world["label"]).sum())
    white = frame[(frame.source == frame.target) & (frame.method == "pgd")]
    assert (white.fooled >= 0.9).all()  # PGD at 8/255 fools the model it was made on
    summary = transfer_summary(frame)
    assert (summary["white-box"] >= summary["transfer"]).all()


def test_a_copy_of_the_model_is_fooled_as_often_as_the_model():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    twin = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    twin.load_state_dict(net.state_dict())
    images = torch.rand(20, 3, 2, 2)
    labels = predict(net, images)
    frame = transfer_matrix({"net": net, "twin": twin}, images, labels, ["fgsm"], eps=0.2)
    assert frame.fooled.nunique() == 1
