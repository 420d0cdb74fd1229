"""neo-ray: code repositories → import graphs → Node2Vec vectors, served by a Ray application."""

__version__ = "0.1.0"
