"""A registered blend of models as code (MLflow models-from-code), as :mod:`served_model` is for
one model: loading it unpickles nothing; the members' arrays come from the ``blend`` artifact
folder (:meth:`prizeflow.model_blend.BlendedModel.load`). Logged by
:func:`prizeflow.tracking.log_blended_model`."""

from mlflow.models import set_model

from prizeflow.pyfunc import BlendPyfunc

set_model(BlendPyfunc())
