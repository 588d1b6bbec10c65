"""shipit: ship a static web site as a smoke-tested Nginx image to AWS ECR and Docker Hub."""

__version__ = "0.1.0"
