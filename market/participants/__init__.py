"""Participants (households, aggregators, data centers, utilities, the operator), their sites and portfolios."""
