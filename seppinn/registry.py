"""The names a solver file may use for the model, each with its one-line description: torch-free
tables that the problem layer checks settings against and the model layer implements
(``model.activations``, ``model.factor_nets``, ``model.separable``; tests check they agree)."""

ACTIVATIONS = {
    "sin": "SIREN: sin(omega0 * (W h + b)), SIREN initialisation",
    "tanh": "tanh, Glorot-normal initialisation (SPINN)",
    "gelu": "GELU (exact, erf form), Glorot-normal initialisation",
    "relu": "ReLU: first derivatives only",
}
# the highest derivative order of an activation that is not zero almost everywhere (absent: smooth)
SMOOTH_ORDERS = {"relu": 1}
BODIES = {
    "mlp": "plain MLP: (depth - 1) hidden layers, then a linear output layer",
    "modified_mlp": "SPINN's gated body: encoders U, V, H, then H = U + Z * (V - U) in (depth - 1) gated layers",
    "pirate": "PirateNet's residual-adaptive body: encoders U, V, H, then blocks of two gated layers and a plain one "
              "((depth - 1) // 3 blocks, at least one), each block H + alpha (Z - H), alpha trained from 0",
}
MODEL_KINDS = {
    "cp": "CP: u = s * sum_r prod_d f_d(x_d)_r (the paper's eq. 2); rank R",
    "tucker": "Tucker: u = G x_1 F_1 ... x_D F_D; rank = R or [R_1, ..., R_D]",
    "tt": "tensor train: u = G_1(x_1) G_2(x_2) ... G_D(x_D) (the paper's eq. 3); rank = R or the D - 1 bond ranks",
}
SCALES = {"sqrt_rank": "CP output scale 1/sqrt(R), as in the paper", "none": "no output scale, as SPINN's code"}
