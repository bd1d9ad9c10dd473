"""The code MLflow logs as the model (models from code): it names the model object, nothing else.

Logged by ``singer_rec.serving.publish.log_recommender`` with the model folder as the artifact
``model_folder``; loading it needs the ``singer_rec`` package installed (serve with
``--env-manager local`` from the project's environment).
"""
import mlflow.models

from singer_rec.serving.model import SingerRecModel

mlflow.models.set_model(SingerRecModel())
