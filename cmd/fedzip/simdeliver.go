package main

import "github.com/fedzip/fedzip/deliver/pipeline"

// Delivery lives in deliver/pipeline (Deliver, DeliveryKey), shared with
// the coordinator server; these names keep simulate's lines as they are.
const defaultDeliverRecipe = pipeline.DefaultRecipe

type delivered = pipeline.Delivered

var deliverModel = pipeline.Deliver
