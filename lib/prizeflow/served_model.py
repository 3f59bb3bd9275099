"""The registered pyfunc as code (MLflow models-from-code): MLflow runs this file to build the
model, so loading a version unpickles nothing; the arrays come from the model's ``factors.npz``
artifact, read with ``allow_pickle=False`` (:meth:`prizeflow.factors.FactorModel.load`).
Logged by :func:`prizeflow.tracking.log_factor_model` with the package as its code path."""

from mlflow.models import set_model

from prizeflow.pyfunc import FactorPyfunc

set_model(FactorPyfunc())
