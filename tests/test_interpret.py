"""DDIM inversion and reconstruction (Appendix D)."""
import torch

from dclib.interpret import ddim_timesteps, invert_and_reconstruct, to_image
from fakes import LinearAdapter


def test_ddim_timesteps():
    assert ddim_timesteps(500, 5) == [0, 100, 200, 300, 400, 500]
    assert ddim_timesteps(0, 5) == [0]


def test_exact_model_reconstructs_its_image_under_any_number_of_steps():
    # eps_pred = (x_t - sqrt(abar) x0) / sqrt(1 - abar) is the exact eps for a model that "knows" x0; DDIM
    # inversion then reconstruction is exact for it.
    x0 = torch.linspace(-1, 1, 16).view(1, 4, 4)

    class Oracle(LinearAdapter):
        def _forward(self, x_t, t, cond):
            abar = self.alphas_cumprod[t].view(-1, 1, 1, 1)
            target = x0 + self.offsets[cond].view(-1, 1, 1, 1)
            return (x_t - abar.sqrt() * target) / (1 - abar).sqrt()

    adapter = Oracle([0.0, 0.5])
    inverted, recon = invert_and_reconstruct(adapter, x0, 0, [0, 1], t_start=600, n_steps=12)
    torch.testing.assert_close(recon[0], x0, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(recon[1], x0 + 0.5, atol=1e-4, rtol=1e-4)  # class 1 "believes" in x0 + 0.5
    assert inverted.shape == x0.shape and not torch.allclose(inverted, x0)
    assert to_image(adapter, recon[0]).shape == (4, 4)


def test_latent_model_decodes(classifiers, rgb_image):
    clf = classifiers["sd"]
    x0, _ = clf.encode_image(rgb_image)
    _, recon = invert_and_reconstruct(clf.adapter, x0, "a photo of a dog", ["a photo of a dog", "a red car"],
                                      t_start=200, n_steps=4)
    assert recon.shape == (2, *x0.shape)
    assert to_image(clf.adapter, recon[0]).shape == (32, 32, 3)


def test_cli_interpret_writes_a_grid(tiny_models, tmp_path):
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    Image.fromarray((np.random.RandomState(0).rand(8, 8) * 255).astype(np.uint8)).save(tmp_path / "d.png")
    out = subprocess.run([sys.executable, "-m", "dclib", "interpret", str(tmp_path / "d.png"), "--model",
                          tiny_models["pixel"], "--labels", "1,2,3", "--t-start", "100", "--steps", "3", "--out",
                          str(tmp_path / "grid.png")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert Image.open(tmp_path / "grid.png").size[0] > 100
